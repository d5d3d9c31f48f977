import ArgumentParser
import FoundationEssentials
import Glibc
import HangarClient
import HangarCore

/// Where the client commands find the controller.
struct ControllerOptions: ParsableArguments {
    @Option(
        name: .customLong("controller"),
        help: ArgumentHelp("The controller's URL (default: $HANGAR_CONTROLLER, else http://127.0.0.1:8080).", valueName: "url"))
    var url: String?

    /// A client of the controller named by --controller or $HANGAR_CONTROLLER; a URL that
    /// is not http(s) is a usage error naming where it came from.
    var client: HangarClient {
        get throws {
            let environment = getenv("HANGAR_CONTROLLER").map { String(cString: $0) }
            let base = url ?? environment ?? "http://127.0.0.1:8080"
            guard isHTTPURL(base) else {
                let source = url == nil ? "HANGAR_CONTROLLER" : "--controller"
                throw ValidationError("\(source) takes an http:// or https:// URL, got \"\(base.prefix(64))\"")
            }
            return HangarClient(url: base, token: getenv("HANGAR_CONTROLLER_TOKEN").map { String(cString: $0) })
        }
    }
}

/// Runs a client call; an API error becomes one line on stderr and exit status 1.
func clientErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as InvalidValue {
        throw ValidationError(error.description)
    } catch let error as HangarClient.Failure {
        FileHandleStandardError.write("hangar: \(error)\n")
        throw ExitCode(1)
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch {
        FileHandleStandardError.write("hangar: the controller: \(error)\n")
        throw ExitCode(1)
    }
}

func printJSON(_ value: some Encodable, compact: Bool = false) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = compact ? [.sortedKeys, .withoutEscapingSlashes] : [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}

/// `hangar connect KEY --image NAME`: the key's backend, started if needed; waits for ready.
struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect", abstract: "Connect to a key's backend (starting one if it has none); print its URL once ready.")

    @OptionGroup var controller: ControllerOptions

    @Argument(help: ArgumentHelp("The key.", valueName: "key"))
    var key: String

    @Option(help: ArgumentHelp("The image to start when the key has no backend (none: only connect).", valueName: "name"))
    var image: String?

    @Option(help: "The key's namespace.") var namespace = ""
    @Option(help: "The key's tag: connects share a backend only with the same tag.") var tag: String?
    @Option(help: "The cluster (default: the controller's).") var cluster: String?
    @Option(help: "The pool within the cluster.") var pool = ""
    @Option(parsing: .singleValue, help: ArgumentHelp("An environment variable for the backend.", valueName: "name=value"))
    var env: [String] = []
    @Option(help: ArgumentHelp("Its memory limit, within the policy's maximum.", valueName: "size")) var memory: String?
    @Option(help: ArgumentHelp("End it after this long without connections.", valueName: "seconds")) var maxIdle: Int?
    @Option(help: ArgumentHelp("End it after this long in all.", valueName: "seconds")) var lifetime: Int?
    @Option(help: "Who connects (passed to the backend).") var user: String?
    @Flag(help: "One token for every connect to the backend.") var staticToken = false
    @Flag(help: "Print the response as JSON.") var json = false
    @Flag(help: "Return at once instead of waiting until the backend is ready.") var noWait = false
    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command (default: the policy's).", valueName: "command"))
    var command: [String] = []

    func run() async throws {
        let request = try await clientErrors { () throws -> ConnectRequest in
            var environment: [String: String] = [:]
            for pair in env {
                guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                    throw ValidationError("--env takes name=value, got \"\(pair)\"")
                }
                environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
            var spawn: SpawnConfig?
            if let image {
                spawn = SpawnConfig(
                    executable: Executable(
                        image: try ImageName(image), command: command.isEmpty ? nil : command,
                        env: environment.isEmpty ? nil : environment,
                        limits: memory.map { ExecutableLimits(memory_max: $0) }),
                    cluster: try cluster.map(ClusterName.init), pool: try PoolName(pool),
                    lifetime_limit_seconds: lifetime, max_idle_seconds: maxIdle, use_static_token: staticToken)
            }
            return ConnectRequest(
                key: KeyConfig(name: try KeyName(key), namespace: try NamespaceName(namespace), tag: tag),
                spawn_config: spawn, user: user)
        }
        let client = try controller.client
        let response = try await clientErrors { try await client.connect(request) }
        let started = ContinuousClock.now
        var waited: Duration?
        if !noWait && response.status != "ready" {
            // On a terminal, one line follows the backend's steps while it starts (and is
            // cleared before the URL, or an error, is printed).
            let terminal = isatty(2) == 1
            let id = try await clientErrors { try BackendID(response.backend_id) }
            _ = try await clientErrors {
                defer { if terminal { FileHandleStandardError.write("\r\u{1b}[K") } }
                return try await client.waitUntilReady(id) { status in
                    guard terminal else { return }
                    let seconds = Self.seconds(ContinuousClock.now - started)
                    FileHandleStandardError.write("\r\u{1b}[Kbackend \(id) on \(response.drone): \(status.status) (\(seconds) s)")
                }
            }
            waited = ContinuousClock.now - started
        }
        if json {
            printJSON(response)
        } else {
            print(response.url)
            FileHandleStandardError.write(
                "backend \(response.backend_id) on \(response.drone) (\(response.spawned ? "spawned" : "existing")"
                    + (waited.map { ", ready in \(Self.seconds($0)) s" } ?? "") + ")\n")
        }
    }
}

extension ConnectCommand {
    /// A duration in seconds with two decimals.
    static func seconds(_ duration: Duration) -> String {
        let hundredths = Int(duration / .milliseconds(10))
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

/// `hangar status BACKEND [--follow]`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Print a backend's status; --follow prints each change until it ends.")

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("The backend's id.", valueName: "backend")) var backend: String
    @Flag(name: .shortAndLong, help: "Keep printing changes until the backend is terminated.") var follow = false

    func run() async throws {
        let client = try controller.client
        let id = try await clientErrors { try BackendID(backend) }
        func line(_ status: BackendStatusView) -> String {
            [status.status, status.reason.map { "(\($0))" }, status.exit_code.map { "exit code \($0)" }]
                .compactMap { $0 }.joined(separator: " ")
        }
        guard follow else {
            print(line(try await clientErrors { try await client.status(id) }))
            return
        }
        try await clientErrors {
            for try await (_, status) in client.statusStream(id) { print(line(status)) }
        }
    }
}

/// `hangar terminate BACKEND [--hard]`.
struct TerminateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "terminate", abstract: "End a backend: SIGTERM and its grace period, or --hard: SIGKILL.")

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("The backend's id.", valueName: "backend")) var backend: String
    @Flag(help: "Kill it at once.") var hard = false

    func run() async throws {
        let client = try controller.client
        let status = try await clientErrors { try await client.terminate(try BackendID(backend), hard: hard) }
        print(status.status)
    }
}

/// `hangar drain DRONE [--undrain]`.
struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Stop new backends on a drone (its running ones go on); --undrain resumes.")

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("The drone.", valueName: "drone")) var drone: String
    @Option(help: "Its cluster (default: the controller's).") var cluster: String?
    @Flag(help: "Give it new backends again.") var undrain = false

    func cluster(_ client: HangarClient) async throws -> ClusterName {
        if let cluster { return try ClusterName(cluster) }
        return try ClusterName(try await client.controllerStatus().default_cluster)
    }

    func run() async throws {
        let client = try controller.client
        try await clientErrors {
            let cluster = try await self.cluster(client)
            try await client.drain(cluster: cluster, drone: try DroneName(drone), !undrain)
        }
        print("\(drone): \(undrain ? "undrained" : "draining")")
    }
}

/// `hangar cluster [NAME]`: drones, their load, backends by status.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Print a cluster's drones with their load, and its backends by status.",
        discussion: "With --watch, again every few seconds until Ctrl-C (or --count times), like watch(1).")

    @OptionGroup var controller: ControllerOptions
    @Argument(help: ArgumentHelp("The cluster (default: the controller's).", valueName: "cluster")) var cluster: String?
    @Flag(help: "Print the state as JSON (with --watch: one object per line).") var json = false
    @Option(help: ArgumentHelp("Print it again every this many seconds.", valueName: "seconds")) var watch: Double?
    @Option(help: ArgumentHelp("With --watch: stop after this many times.", valueName: "n")) var count: Int?

    func validate() throws {
        if let watch, !(watch >= 0.1 && watch <= 3600) {
            throw ValidationError("--watch: from 0.1 to 3600 seconds, got \(watch)")
        }
        if let count {
            guard watch != nil else { throw ValidationError("--count goes with --watch") }
            if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        }
    }

    func run() async throws {
        let client = try controller.client
        let name = try await clientErrors { try await defaultCluster(client) }
        guard let watch else {
            let state = try await clientErrors { try await client.clusterState(name) }
            return json ? printJSON(state, compact: false) : print(ClusterCommand.table(state))
        }
        // On a terminal each frame replaces the last; into a pipe they follow each other.
        let terminal = isatty(1) == 1
        var shown = 0
        while count.map({ shown < $0 }) ?? true {
            if shown > 0 { try await Task.sleep(for: .milliseconds(Int(watch * 1000))) }
            let state = try await clientErrors { try await client.clusterState(name) }
            shown += 1
            if json {
                printJSON(state, compact: true)
            } else {
                let header = "every \(watch) s · \(utcTimestamp(wallClockMilliseconds()).prefix(19).replacing("T", with: " ")) UTC"
                print((terminal ? "\u{1b}[H\u{1b}[2J" : shown > 1 ? "\n" : "") + header + "\n\n" + ClusterCommand.table(state))
            }
            fflush(nil)  // each frame as it comes, into a pipe too
        }
    }

    func defaultCluster(_ client: HangarClient) async throws -> ClusterName {
        if let cluster { return try ClusterName(cluster) }
        return try ClusterName(try await client.controllerStatus().default_cluster)
    }

    static func table(_ state: ClusterStateView) -> String {
        var rows = [["DRONE", "POOL", "STATE", "HEARTBEAT", "BACKENDS", "MEMORY", "LOAD"]]
        for drone in state.drones {
            let condition = !drone.connected ? "disconnected" : drone.draining ? "draining" : "ready"
            let memory =
                drone.capacity_memory == 0
                ? ByteSize(bytes: drone.committed_memory).description
                : "\(ByteSize(bytes: drone.committed_memory))/\(ByteSize(bytes: drone.capacity_memory))"
            rows.append([
                drone.name, drone.pool.isEmpty ? "-" : drone.pool, condition, "\(drone.last_heartbeat_ms_ago) ms ago",
                "\(drone.backends)/\(drone.capacity_backends)", memory, "\(Int((drone.load * 100).rounded()))%",
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            // Padded to the column's width, but for the last column.
            zip(row.dropLast(), widths).map { $0.0 + String(repeating: " ", count: $0.1 - $0.0.count) + "  " }.joined()
                + row[row.count - 1]
        }
        let order = BackendStatus.allCases.map(\.description)
        let counts = state.backends.sorted { (order.firstIndex(of: $0.key) ?? 99) < (order.firstIndex(of: $1.key) ?? 99) }
        lines.append("")
        lines.append(
            "cluster \(state.cluster): "
                + (counts.isEmpty ? "no backends" : counts.map { "\($0.value) \($0.key)" }.joined(separator: ", ")))
        return lines.joined(separator: "\n")
    }
}
