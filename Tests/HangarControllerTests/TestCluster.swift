import FoundationEssentials
import Glibc
import HangarClient
import HangarCore
import HangarTestSupport
import HTTPTypes
import HummingbirdWSClient
import Logging
import Synchronization
import Testing

/// A controller and two drones, each a real `hangar` process, on loopback: the drones run
/// real sandboxes (busybox httpd). Short leases so that expiry can be watched: a 10 s lease
/// (a loaded 2-core machine delays renewals by a second or two), heartbeats every 200 ms,
/// out of scheduling after 3 s of silence, lost after 10 s.
final class TestCluster: Sendable {
    static let cluster = try! ClusterName("test.local:9090")
    let directory: TemporaryDirectory
    let token = "ct-" + randomHex16() + randomHex16()
    let port: Int
    private let controllerProcess: Mutex<HangarProcess>
    private let droneProcesses = Mutex<[String: HangarProcess]>([:])
    let droneNames: [String]
    /// Each drone's cgroup parent, so that the two runtimes (and the test's) keep apart.
    let cgroupParents: [String: String]

    var url: String { "http://127.0.0.1:\(port)" }
    var client: HangarClient { HangarClient(url: url, token: token) }

    init(drones: [String] = ["dr-one", "dr-two"]) async throws {
        await HangarProcess.endLeftovers()
        directory = try TemporaryDirectory("hangar-cluster")
        droneNames = drones
        let suffix = randomHex16().prefix(6)
        cgroupParents = Dictionary(uniqueKeysWithValues: drones.map { ($0, "hangar-ct-\($0)-\(suffix)") })
        let first = try HangarProcess.start(
            Self.controllerArguments(store: directory.path + "/controller.sqlite", port: 0), environment: ["HANGAR_CONTROLLER_TOKEN": token])
        try await first.waitForOutput("listening on")
        guard let match = first.output.firstMatch(of: /listening on http:\/\/127\.0\.0\.1:(\d+)/), let bound = Int(match.1) else {
            throw TestFailure("no port in \(first.output)")
        }
        port = bound
        controllerProcess = Mutex(first)
        for name in drones { try startDrone(name) }
        try await waitUntilConnected(drones)
    }

    static func controllerArguments(store: String, port: Int) -> [String] {
        [
            "controller", "--listen", "127.0.0.1:\(port)", "--store", store, "--cluster", cluster.rawValue, "--lease", "10",
            "--heartbeat", "200", "--heartbeat-freshness", "3000", "--lost-after", "10", "--policies", "none",
        ]
    }

    func startDrone(_ name: String) throws {
        let process = try HangarProcess.start(
            [
                "drone", "--controller", url, "--name", name, "--cluster", Self.cluster.rawValue, "--socket",
                socket(name), "--state", directory.path + "/\(name).sqlite", "--log-directory", "none", "--data-root",
                "none", "--max-backends", "600",
            ],
            environment: ["HANGAR_CONTROLLER_TOKEN": token, "HANGAR_CGROUP_PARENT": cgroupParents[name]!])
        droneProcesses.withLock { $0[name] = process }
    }

    /// Opens the controller's `/ctrl/c/CLUSTER/<socket>` (drone-socket, proxy-socket) with
    /// its token, as a drone or a proxy would.
    func webSocket(_ socket: String, _ handler: @escaping WebSocketDataHandler<WebSocketClient.Context>) async throws {
        var settings = WebSocketClientConfiguration()
        settings.additionalHeaders[.authorization] = "Bearer \(token)"
        try await WebSocketClient.connect(
            url: "ws://127.0.0.1:\(port)/ctrl/c/\(Self.cluster)/\(socket)", configuration: settings,
            logger: Logger(label: "test.\(socket)"), handler: handler)
    }

    func socket(_ drone: String) -> String { directory.path + "/\(drone).sock" }

    func drone(_ name: String) -> HangarProcess { droneProcesses.withLock { $0[name]! } }
    var controller: HangarProcess { controllerProcess.withLock { $0 } }

    /// Kills the controller with SIGKILL (nothing flushed, nothing said to the drones).
    func killController() async throws {
        controller.signal(SIGKILL)
        _ = try await controller.finish()
    }

    /// Starts the controller again on the same store and port.
    func restartController() async throws {
        let process = try HangarProcess.start(
            Self.controllerArguments(store: directory.path + "/controller.sqlite", port: port),
            environment: ["HANGAR_CONTROLLER_TOKEN": token])
        controllerProcess.withLock { $0 = process }
        try await process.waitForOutput("listening on")
    }

    /// Waits until these drones are connected (at most 15 s).
    func waitUntilConnected(_ drones: [String]) async throws {
        try await eventually("drones \(drones) connected", timeout: .seconds(15)) {
            let state = try? await client.clusterState(Self.cluster)
            let connected = Set(state?.drones.filter(\.connected).map(\.name) ?? [])
            return Set(drones).isSubset(of: connected)
        }
    }

    /// A connect request for `key` running busybox httpd (ready once port 8080 answers).
    func request(_ key: String, tag: String? = nil, spawn: Bool = true) throws -> ConnectRequest {
        ConnectRequest(
            key: KeyConfig(name: try KeyName(key), tag: tag),
            spawn_config: spawn
                ? SpawnConfig(
                    executable: Executable(
                        image: try ImageName("busybox"), command: ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/etc"]))
                : nil,
            user: "ada")
    }

    struct DroneBackend: Decodable {
        var id: String
        var key: String
        var status: String
    }

    /// The backends a drone's admin API lists.
    func backends(on drone: String) async throws -> [DroneBackend] {
        struct List: Decodable { var backends: [DroneBackend] }
        let result = try await HangarProcess.run(
            program: "/usr/bin/curl", ["-s", "--unix-socket", socket(drone), "http://drone/backends"])
        return try JSONDecoder().decode(List.self, from: Data(result.stdout.utf8)).backends
    }

    /// Stops the drones (their backends end with them) and the controller, and removes
    /// what they left: their cgroup parents and the directory.
    func stop() async throws {
        for name in droneNames {
            let process = drone(name)
            process.signal(SIGTERM)
            _ = try await process.finish()
        }
        controller.signal(SIGTERM)
        _ = try await controller.finish()
        // A sandbox's last processes may still be on their way out of the process table
        // after its init's end was reported (and one of a drone killed with SIGKILL dies
        // by PR_SET_PDEATHSIG): none may be left for the next test.
        try await eventually("no sandbox process left (\(HostState.processesWithSandboxUIDs()))") {
            HostState.processesWithSandboxUIDs().isEmpty
        }
        for parent in cgroupParents.values {
            #expect(HostState.sandboxCgroups(parent: parent).isEmpty, "a drone left sandbox cgroups in \(parent)")
            HostState.removeCgroupParent(parent)
        }
        directory.remove()
    }
}
