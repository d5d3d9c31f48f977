import FoundationEssentials
import Glibc
import HangarClient
import HangarCore
import HangarTestSupport
import Synchronization
import Testing

/// The three roles as real `hangar` processes on loopback: a controller, a drone with an
/// ingress port, and a proxy whose address names the cluster ("127.0.0.1:PORT"), so that
/// the URLs connects return work as they are. Backends are the examples in their own
/// images under their own policies (collab by default), or Python programs of a test's in
/// the python image.
final class ProxyStack: Sendable {
    let directory: TemporaryDirectory
    let token = "ct-" + randomHex16() + randomHex16()
    let secret = "is-" + randomHex16() + randomHex16()
    let controllerPort: Int
    let proxyPort: Int
    let cluster: ClusterName
    let cgroupParent = "hangar-pt-" + randomHex16().prefix(6)
    let controller: HangarProcess
    let drone: HangarProcess
    let proxy: HangarProcess

    var client: HangarClient { HangarClient(url: "http://127.0.0.1:\(controllerPort)", token: token) }

    init(proxyArguments: [String] = [], droneArguments: [String] = [], controllerArguments: [String] = []) async throws {
        await HangarProcess.endLeftovers()
        directory = try TemporaryDirectory("hangar-proxy")
        proxyPort = Int(try freeLoopbackPort())
        cluster = try ClusterName("127.0.0.1:\(proxyPort)")
        controller = try HangarProcess.start(
            [
                "controller", "--listen", "127.0.0.1:0", "--store", directory.path + "/controller.sqlite", "--cluster",
                cluster.rawValue, "--policies", "none",
            ] + controllerArguments, environment: ["HANGAR_CONTROLLER_TOKEN": token])
        try await controller.waitForOutput("listening on")
        guard let match = controller.output.firstMatch(of: /listening on http:\/\/127\.0\.0\.1:(\d+)/), let port = Int(match.1)
        else { throw TestFailure("no port in \(controller.output)") }
        controllerPort = port
        let url = "http://127.0.0.1:\(port)"
        drone = try HangarProcess.start(
            [
                "drone", "--controller", url, "--name", "dr-proxy", "--cluster", cluster.rawValue, "--socket",
                directory.path + "/drone.sock", "--state", directory.path + "/drone.sqlite", "--log-directory", "none",
                "--data-root", "none", "--ingress-port", "0",
            ] + droneArguments,
            environment: [
                "HANGAR_CONTROLLER_TOKEN": token, "HANGAR_INGRESS_SECRET": secret, "HANGAR_CGROUP_PARENT": cgroupParent,
            ])
        proxy = try HangarProcess.start(
            ["proxy", "--controller", url, "--cluster", cluster.rawValue, "--listen", "127.0.0.1:\(proxyPort)"]
                + proxyArguments,
            environment: ["HANGAR_CONTROLLER_TOKEN": token, "HANGAR_INGRESS_SECRET": secret])
        try await proxy.waitForOutput("listening on")
        let client = self.client
        let cluster = self.cluster
        try await eventually("the drone is connected", timeout: .seconds(15)) {
            (try? await client.clusterState(cluster))?.drones.contains { $0.connected } ?? false
        }
        try await eventually("the proxy is ready") { (try? ProxyStack.get(port: self.proxyPort, "/ready").status) == 200 }
    }

    /// A connect for `key` running an example's image with its policy's command (the
    /// collab example by default: ready once port 8080 answers), or, with `program`, that
    /// Python source in the python image.
    func request(
        _ key: String, maxIdle: Int? = nil, subdomain: String? = nil, user: String? = "ada", example: String = "collab",
        program: String? = nil
    ) throws -> ConnectRequest {
        let executable =
            if let program {
                Executable(image: try ImageName("python"), command: ["python3", "-c", program])
            } else {
                Executable(image: try ImageName(example))
            }
        return ConnectRequest(
            key: KeyConfig(name: try KeyName(key)),
            spawn_config: SpawnConfig(executable: executable, max_idle_seconds: maxIdle, subdomain: subdomain),
            user: user, auth: ["team": .string("blue")])
    }

    /// The path part of a connect's URL ("/TOKEN/").
    static func path(of response: ConnectResponse) -> String {
        let afterScheme = response.url.dropFirst("http://".count)
        return String(afterScheme[afterScheme.firstIndex(of: "/")!...])
    }

    static func get(port: Int, _ path: String, host: String? = nil) throws -> HTTPExchange.Response {
        let connection = try HTTPExchange(port: port)
        try connection.send("GET \(path) HTTP/1.1\r\nHost: \(host ?? "127.0.0.1:\(port)")\r\n\r\n")
        return try connection.response()
    }

    /// Stops the three (proxy, drone, controller: what each printed, in that order) and
    /// checks that nothing of the drone's is left.
    @discardableResult
    func stop() async throws -> [HangarProcess.Result] {
        var results: [HangarProcess.Result] = []
        for process in [proxy, drone, controller] {
            process.signal(SIGTERM)
            results.append(try await process.finish())
        }
        try await eventually("no sandbox process left") { HostState.processesWithSandboxUIDs().isEmpty }
        #expect(HostState.sandboxCgroups(parent: cgroupParent).isEmpty, "the drone left sandbox cgroups")
        HostState.removeCgroupParent(cgroupParent)
        directory.remove()
        return results
    }
}

/// A raw HTTP/1.1 connection to the proxy on loopback: bytes exactly as written (hostile
/// ones too), responses read one at a time (Content-Length, chunked, or until close).
final class HTTPExchange {
    struct Response {
        var status: Int
        var fields: [(String, String)]
        var body: String

        func field(_ name: String) -> String? { fields.first { $0.0 == name.lowercased() }?.1 }
    }

    let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int, timeout: Int = 15) throws {
        fd = try connectLoopback(UInt16(port))
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws { try writeAll(fd, bytes) }

    /// False once the peer has closed (EOF) and everything was read.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = read(fd, &chunk, chunk.count)
        if n < 0 { throw TestFailure("read: errno \(errno) (timed out?)") }
        if n == 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    /// Everything until the proxy closes the connection.
    func readToEnd() throws -> String {
        while try fill() {}
        defer { buffer.removeAll() }
        return String(decoding: buffer, as: UTF8.self)
    }

    /// True if the proxy closed the connection (EOF or reset) within the read timeout;
    /// bytes before the end are read and dropped.
    func closedByPeer() -> Bool {
        while true {
            do {
                if try !fill() { return true }
            } catch {
                return errno == ECONNRESET
            }
        }
    }

    func response() throws -> Response {
        var end: Int?
        while end == nil {
            if let index = buffer.indices.dropLast(3).first(where: { buffer[$0..<$0 + 4].elementsEqual([13, 10, 13, 10]) }) {
                end = index + 4
            } else if try !fill() {
                throw TestFailure("the connection ended before a response head: \(String(decoding: buffer, as: UTF8.self))")
            }
        }
        let head = String(decoding: buffer[0..<end!], as: UTF8.self)
        buffer.removeFirst(end!)
        var lines = head.split(separator: "\r\n").map(String.init)
        let status = Int(lines.removeFirst().split(separator: " ")[1])!
        let fields = lines.map { line -> (String, String) in
            let colon = line.firstIndex(of: ":")!
            return (line[..<colon].lowercased(), String(line[line.index(after: colon)...].drop { $0 == " " }))
        }
        var response = Response(status: status, fields: fields, body: "")
        if let length = response.field("content-length").flatMap(Int.init) {
            while buffer.count < length { guard try fill() else { throw TestFailure("short body") } }
            response.body = String(decoding: buffer[0..<length], as: UTF8.self)
            buffer.removeFirst(length)
        } else if response.field("transfer-encoding") == "chunked" {
            throw TestFailure("chunked responses are not read by this client")
        } else if status >= 200 && status != 304 && status != 204 {
            response.body = try readToEnd()
        }
        return response
    }
}

extension String {
    /// Whether `other` occurs again after the first `count` characters.
    func contains(_ other: String, after count: Int) -> Bool { dropFirst(count).contains(other) }
}
