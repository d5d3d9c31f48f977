import Glibc
import HangarCore
import HangarDrone
import HangarPolicy
import HangarSandbox
import HangarTestSupport
import Logging
import Testing

/// Backends on a drone, with real servers in real sandboxes.
@Suite("Drone lifecycle", .serialized, .timeLimit(.minutes(3)))
struct DroneTests {
    let before = HostState.capture()

    func expectHostClean(sourceLocation: SourceLocation = #_sourceLocation) async {
        let after = await HostState.settled(to: before)
        #expect(after == before, "the backend left something on the host", sourceLocation: sourceLocation)
    }

    func drone(_ adjust: (inout DroneConfiguration) -> Void = { _ in }) -> Drone {
        var configuration = DroneConfiguration()
        configuration.gracePeriod = .milliseconds(500)
        configuration.startupTimeout = .seconds(20)
        configuration.logDirectory = nil
        adjust(&configuration)
        return Drone(
            runtime: TestSandbox.runtime, policies: PolicyLoader(directory: TestSandbox.repositoryRoot + "/policies"),
            images: TestSandbox.images, configuration: configuration)
    }

    /// A python HTTP server on $PORT serving its environment as /env.
    func httpServer(key: String = "doc-1") throws -> SpawnRequest {
        var request = SpawnRequest(key: key, image: try ImageName("python"))
        request.command = [
            "sh", "-c",
            "mkdir /tmp/www && env > /tmp/www/env && cd /tmp/www && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        ]
        return request
    }

    /// GET `path` through a connection into the backend.
    func get(_ backend: Backend, _ path: String) throws -> String {
        let fd = try backend.connect()
        defer { close(fd) }
        let request = "GET \(path) HTTP/1.0\r\n\r\n"
        _ = request.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer.prefix(n)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func waitFor(_ status: BackendStatus, _ backend: Backend, within: Duration = .seconds(20)) async {
        let deadline = ContinuousClock.now + within
        while backend.current.status < status && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test("an HTTP backend goes through every status in order, with Hangar's and Plane's variables")
    func lifecycle() async throws {
        let drone = drone()
        let backend = try drone.spawn(try httpServer())
        await waitFor(.ready, backend)
        #expect(backend.current.status == .ready)
        let env = try get(backend, "/env")
        #expect(env.hasPrefix("HTTP/1.0 200"))
        let lines = Set(env.split(whereSeparator: \.isNewline).map(String.init))
        for variable in [
            "PORT=8080", "HANGAR_KEY=doc-1", "HANGAR_BACKEND_ID=\(backend.id)", "HANGAR_FENCING_TOKEN=1",
            "SESSION_BACKEND_ID=\(backend.id)", "SESSION_BACKEND_KEY=doc-1", "SESSION_BACKEND_FENCING_TOKEN=1",
        ] {
            #expect(lines.contains(variable), "\(variable)")
        }
        let metrics = drone.metrics()
        #expect(metrics.contains("hangar_backends{status=\"ready\"} 1\n"), "\(metrics)")
        #expect(metrics.contains("hangar_spawns_total 1\n"))
        #expect(metrics.contains("hangar_spawn_ready_seconds_count 1\n"))
        #expect(metrics.contains("hangar_backend_memory_bytes{backend=\"\(backend.id)\",key=\"doc-1\"} "))
        #expect(metrics.contains("hangar_backend_cpu_seconds_total{backend=\"\(backend.id)\",key=\"doc-1\"} "))
        backend.terminate(.external)
        let end = await backend.terminated()
        #expect(end.reason == .external)
        #expect(backend.statuses == [.scheduled, .loading, .starting, .waiting, .ready, .terminating, .terminated])
        #expect(drone.metrics().contains("hangar_backends{status=\"terminated\"} 1\n"))
        await expectHostClean()
    }

    @Test("a backend that never listens ends with startup-timeout")
    func startupTimeout() async throws {
        let drone = drone { $0.startupTimeout = .seconds(1) }
        var request = SpawnRequest(key: "quiet", image: try ImageName("busybox"))
        request.command = ["sleep", "60"]
        let backend = try drone.spawn(request)
        let end = await backend.terminated()
        #expect(end.reason == .startupTimeout)
        await expectHostClean()
    }

    @Test("one that exits reports its code; one that ignores SIGTERM is killed after the grace")
    func exitsAndStubborn() async throws {
        let drone = drone()
        var exits = SpawnRequest(key: "exits", image: try ImageName("busybox"))
        exits.command = ["sh", "-c", "echo to stdout; echo to stderr >&2; exit 7"]
        let first = try drone.spawn(exits)
        let end = await first.terminated()
        #expect(end.reason == .exited && end.exitCode == 7, "\(end)")
        try await Task.sleep(for: .milliseconds(100))  // the reader threads drain the pipes
        #expect(first.logs.text.contains("to stdout\n") && first.logs.text.contains("to stderr\n"), "\(first.logs.text)")

        var stubborn = try httpServer(key: "stubborn")
        stubborn.command = [
            "sh", "-c", "trap '' TERM; mkdir /tmp/w; cd /tmp/w; python3 -m http.server \"$PORT\" --bind 127.0.0.1 & wait; sleep 60",
        ]
        let second = try drone.spawn(stubborn)
        await waitFor(.ready, second)
        let start = ContinuousClock.now
        second.terminate(.external)
        let stopped = await second.terminated()
        #expect(stopped.reason == .external)
        #expect(second.statuses.contains(.hardTerminating), "\(second.statuses)")
        #expect(ContinuousClock.now - start >= .milliseconds(450), "the grace period was given")
        await expectHostClean()
    }

    @Test("idle shutdown fires after max_idle with no connection, never while one is open")
    func idle() async throws {
        let drone = drone()
        var request = try httpServer(key: "idle")
        request.maxIdle = .milliseconds(800)
        let backend = try drone.spawn(request)
        await waitFor(.ready, backend)
        // A connection held open (carried with splice) keeps it alive past max_idle.
        let client = try LoopbackPair()
        backend.traffic.carry(client: client.inner, backend: try backend.connect())
        try await Task.sleep(for: .milliseconds(1600))
        #expect(backend.current.status == .ready, "an open connection keeps it running")
        #expect(backend.traffic.openConnections == 1)
        client.closeOuter()
        let end = await backend.terminated()
        #expect(end.reason == .idle)
        await expectHostClean()
    }

    @Test("logs are kept in a bounded buffer and a rotating file")
    func logs() async throws {
        var template = Array("/tmp/hangar-logs-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        let drone = drone {
            $0.logCapacity = 4096
            $0.logDirectory = directory
        }
        var chatty = SpawnRequest(key: "chatty", image: try ImageName("busybox"))
        chatty.command = ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done"]
        let backend = try drone.spawn(chatty)
        _ = await backend.terminated()
        try await Task.sleep(for: .milliseconds(200))
        let kept = backend.logs.text
        #expect(kept.utf8.count <= 4096)
        #expect(kept.hasSuffix("line 1999\n"))
        let file = readFile(directory + "/\(backend.id).log") ?? ""
        #expect(file.hasPrefix("line 0\n") && file.hasSuffix("line 1999\n"), "the file has everything")
        unlink(directory + "/\(backend.id).log")
        rmdir(directory)
        await expectHostClean()
    }

    @Test("200 backends spawned at once, then terminated, leave nothing behind")
    func twoHundred() async throws {
        let drone = drone { $0.maxBackends = 250 }
        var request = SpawnRequest(key: "many", image: try ImageName("busybox"))
        request.command = ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/tmp"]
        let start = ContinuousClock.now
        var backends: [Backend] = []
        for index in 0..<200 {
            request.key = "many-\(index)"
            backends.append(try drone.spawn(request))
        }
        for backend in backends { await waitFor(.ready, backend, within: .seconds(60)) }
        let readyAfter = ContinuousClock.now - start
        #expect(backends.allSatisfy { $0.current.status == .ready }, "\(backends.map(\.current.status).filter { $0 != .ready })")
        #expect(drone.running.count == 200)
        for backend in backends { backend.terminate(.external) }
        for backend in backends { _ = await backend.terminated() }
        #expect(drone.running.isEmpty)
        print("200 backends ready after \(readyAfter)")
        await expectHostClean()
    }

    @Test("ingress: a signed preface reaches the backend; a missing, wrong or stale one is refused and reaches nothing")
    func ingress() async throws {
        let drone = drone()
        let secret = Array("an ingress secret of enough bytes".utf8)
        let listener = try IngressListener(drone: drone, secret: secret, port: 0, logger: Logger(label: "test"))
        defer { listener.close() }
        let backend = try drone.spawn(try httpServer(key: "ingress"))
        await waitFor(.ready, backend)

        func exchange(_ preface: String) throws -> String {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = listener.port.bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw TestFailure("connect: errno \(errno)") }
            let message = preface + "GET /env HTTP/1.0\r\n\r\n"
            _ = message.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                bytes += buffer.prefix(n)
            }
            return String(decoding: bytes, as: UTF8.self)
        }

        let good = try exchange(IngressPreface.make(backend: backend.id, secret: secret))
        #expect(good.hasPrefix("HTTP/1.0 200"), "\(good.prefix(60))")
        let requestsSeen = backend.logs.text.components(matching: "GET /env")
        #expect(try exchange("").isEmpty, "no preface")
        #expect(try exchange(IngressPreface.make(backend: backend.id, secret: Array("another secret of enough bytes".utf8))).isEmpty)
        #expect(try exchange(IngressPreface.make(backend: backend.id, secret: secret, now: Int(time(nil)) - 3600)).isEmpty)
        #expect(try exchange(IngressPreface.make(backend: "bk-nosuchbackend", secret: secret)).isEmpty)
        #expect(listener.refused == [.malformed, .badSignature, .expired, .unknownBackend], "\(listener.refused)")
        try await Task.sleep(for: .milliseconds(100))
        #expect(backend.logs.text.components(matching: "GET /env") == requestsSeen, "no refused byte reached the backend")
        backend.terminate(.external)
        _ = await backend.terminated()
        await expectHostClean()
    }

    @Test("a terminate while loading or starting ends the backend")
    func terminateEarly() async throws {
        let drone = drone()
        let loading = try drone.spawn(try httpServer(key: "early-1"))
        loading.terminate(.external)
        let first = await loading.terminated()
        #expect(first.reason == .external)
        let starting = try drone.spawn(try httpServer(key: "early-2"))
        await waitFor(.starting, starting, within: .seconds(5))
        starting.terminate(.external)
        let second = await starting.terminated()
        #expect(second.reason == .external)
        #expect(!second.description.isEmpty)
        await expectHostClean()
    }

    @Test("a memory hog ends as oom; a drone beyond its capacity refuses a spawn")
    func oomAndCapacity() async throws {
        let drone = drone { $0.maxBackends = 1 }
        var hog = SpawnRequest(key: "hog", image: try ImageName("busybox"))
        hog.command = ["sh", "-c", "x=$(head -c 1000000000 /dev/zero | tr '\\0' a)"]
        hog.limits.memoryMax = .mebibytes(32)
        let backend = try drone.spawn(hog)
        let refused = #expect(throws: DroneError.self) { try drone.spawn(try httpServer(key: "second")) }
        #expect(refused?.description == "the drone is full: 1 backends of 1")
        let end = await backend.terminated()
        #expect(end.reason == .oom, "\(end)")
        await expectHostClean()
    }
}

/// A connected pair of unix sockets: `inner` goes to the drone, `outer` plays the client.
struct LoopbackPair {
    let inner: Int32
    let outer: Int32

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw TestFailure("socketpair: errno \(errno)")
        }
        inner = fds[0]
        outer = fds[1]
    }

    func closeOuter() { close(outer) }
}

extension String {
    /// How many times `needle` occurs.
    func components(matching needle: String) -> Int {
        var count = 0
        var rest = self[...]
        while let range = rest.firstRange(of: needle) {
            count += 1
            rest = rest[range.upperBound...]
        }
        return count
    }
}
