import ArgumentParser
import CShims
import Glibc
import HangarCore
import HangarDrone
import HangarPolicy
import HangarSandbox
import Logging

/// `hangar bench …`: measurements, printed as a table and as JSON, with peers side by side.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure Hangar against its peers in the same run.", subcommands: [
            SpawnBench.self, ColdstartBench.self, BurstBench.self, IdleBench.self, ConnectBench.self, ProxyBench.self,
        ])
}

/// Spawn-and-exit latency of /bin/true: Hangar's sandbox, bubblewrap, plain posix_spawn.
struct SpawnBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawn",
        abstract: "Spawn and exit of /bin/true: Hangar (fresh and prepared), bwrap --unshare-all, posix_spawn.",
        discussion: """
            Each run starts /bin/true of the image and waits for it to end and for everything \
            around it to be released. Hangar's run is the full sandbox (all namespaces, idmapped \
            overlay root, /proc and /dev, seccomp, capabilities dropped, cleanup). "hangar, prepared" \
            hands the command to a sandbox created ahead (keepPrepared), waiting unmeasured before \
            each run until one is ready. The contenders run in turns (one run each, then again). \
            bwrap gets the \
            same image read-only as / with --unshare-all, a fresh /proc, /dev and a /tmp tmpfs. \
            posix_spawn of the host's /bin/true is the floor.
            """)

    @Option(help: "Measured runs per contender.")
    var runs = 500

    @Option(help: "Unmeasured runs before measuring.")
    var warmup = 20

    @Option(help: "The image whose /bin/true is run.")
    var image = "busybox"

    @Option(help: ArgumentHelp("Also write the JSON to this file.", valueName: "path"))
    var json: String?

    @Option(help: ArgumentHelp("Network namespaces Hangar prepares ahead (0: one per spawn).", valueName: "n"))
    var netnsPool = SandboxRuntimeConfiguration().networkNamespacePool

    @Option(help: ArgumentHelp("A memory limit for Hangar's sandboxes: each then gets a cgroup.", valueName: "size"))
    var memory: String?

    @Option(help: ArgumentHelp("Which contenders to run, comma-separated.", valueName: "list"))
    var only: String = "hangar,hangar-prepared,bwrap,posix_spawn"

    func validate() throws {
        if runs < 1 || runs > 1_000_000 { throw ValidationError("--runs must be 1...1000000, got \(runs)") }
        if warmup < 0 { throw ValidationError("--warmup must not be negative") }
        if netnsPool < 0 || netnsPool > 1024 { throw ValidationError("--netns-pool must be 0...1024") }
        let unknown = Set(contenders).subtracting(["hangar", "hangar-prepared", "bwrap", "posix_spawn"])
        if !unknown.isEmpty { throw ValidationError("--only: unknown contender \(unknown.sorted().joined(separator: ", "))") }
    }

    var contenders: [String] {
        only.split(separator: ",").map { String($0).trimmingCharacters(in: " ") }
    }

    func run() async throws {
        let image = try await commandLineErrors { try ImageStore.fromEnvironment().image(try ImageName(self.image)) }
        let runtime = try await commandLineErrors {
            var configuration = try SandboxRuntimeConfiguration.fromEnvironment()
            configuration.networkNamespacePool = netnsPool
            return try SandboxRuntime(configuration: configuration, logger: Logger(label: "hangar.bench"))
        }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        var base = SandboxSpec(image: image, command: ["/bin/true"])
        base.stdio = (null, null, null)
        base.limits.memoryMax = try await commandLineErrors { try memory.map { try ByteSize(parsing: $0) } }
        let spec = base

        // Fresh spawns get another hostname when prepared ones are measured too, so that
        // they never take one.
        var fresh = spec
        if self.contenders.contains("hangar-prepared") { fresh.hostname = try Hostname("fresh") }
        let freshSpec = fresh
        var contenders: [Contender] = []
        if self.contenders.contains("hangar") {
            contenders.append(
                Contender(name: "hangar") {
                    let sandbox = try await runtime.spawn(freshSpec)
                    let status = await sandbox.wait()
                    guard !sandbox.prepared else { throw BenchError("hangar: the spawn took a prepared sandbox") }
                    guard status == .exited(0) else { throw BenchError("hangar: /bin/true \(status)") }
                })
        }
        if self.contenders.contains("hangar-prepared") {
            // Created ahead, outside the measurement; the next one is prepared (at nice 19)
            // while the measured run goes on, as in a drone.
            try await commandLineErrors { try runtime.keepPrepared(1, like: spec) }
            contenders.append(
                Contender(name: "hangar, prepared") {
                    let sandbox = try await runtime.spawn(spec)
                    let status = await sandbox.wait()
                    guard sandbox.prepared else { throw BenchError("hangar, prepared: no prepared sandbox was ready") }
                    guard status == .exited(0) else { throw BenchError("hangar, prepared: /bin/true \(status)") }
                })
        }
        if !self.contenders.contains("bwrap") {
        } else if let bwrap = findExecutable("bwrap") {
            let arguments = [
                bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", image.root, "/", "--proc", "/proc",
                "--dev", "/dev", "--tmpfs", "/tmp", "--", "/bin/true",
            ]
            contenders.append(Contender(name: "bwrap --unshare-all") { try spawnAndWait(arguments, stdio: null) })
        } else {
            FileHandleStandardError.write("hangar bench: bwrap not found; install bubblewrap to compare\n")
        }
        if self.contenders.contains("posix_spawn") {
            contenders.append(Contender(name: "posix_spawn (floor)") { try spawnAndWait(["/bin/true"], stdio: null) })
        }
        // Before every run of every contender: the prepared sandbox is back (its
        // preparation never overlaps another contender's run).
        let waitForPrepared = self.contenders.contains("hangar-prepared")
        let settle: @Sendable () async throws -> Void = {
            guard waitForPrepared else { return }
            for _ in 0..<10_000 where runtime.preparedCount(like: spec) == 0 {
                try await Task.sleep(for: .microseconds(200))
            }
        }
        let results = try await measure(contenders, settle: settle)
        await runtime.dropPrepared()

        print(Measurement.table(results, title: "spawn + exit of /bin/true, \(runs) runs, \(image.root)"))
        let report = Measurement.json(results, benchmark: "spawn", runs: runs)
        print(report)
        try writeReport(report, to: json)
    }

    /// Measures the contenders in turns (one run of each, then again), so that the
    /// machine's drift over the minutes of a benchmark affects them alike: `warmup`
    /// unmeasured rounds, then `runs` measured ones. `settle` runs, unmeasured, before each.
    private func measure(_ contenders: [Contender], settle: @Sendable () async throws -> Void) async throws -> [Measurement] {
        var samples = [[Duration]](repeating: [], count: contenders.count)
        let clock = ContinuousClock()
        for round in 0..<(warmup + runs) {
            for (index, contender) in contenders.enumerated() {
                try await settle()
                let start = clock.now
                try await contender.run()
                if round >= warmup { samples[index].append(clock.now - start) }
            }
        }
        return zip(contenders, samples).map { Measurement(name: $0.name, samples: $1) }
    }
}

/// One thing measured: a name and one run of it.
struct Contender: Sendable {
    var name: String
    var run: @Sendable () async throws -> Void
}

/// Latencies of one contender.
struct Measurement {
    var name: String
    var samples: [Duration]

    func percentile(_ p: Double) -> Double {
        let sorted = samples.sorted()
        let index = min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))
        return sorted[index].milliseconds
    }

    var mean: Double { samples.reduce(0.0) { $0 + $1.milliseconds } / Double(samples.count) }

    static func table(_ results: [Measurement], title: String) -> String {
        var lines = [title, pad("contender", 24) + pad("median ms", 11) + pad("p90 ms", 9) + pad("p99 ms", 9) + "mean ms"]
        for result in results {
            lines.append(
                pad(result.name, 24) + pad(format(result.percentile(0.5)), 11) + pad(format(result.percentile(0.9)), 9)
                    + pad(format(result.percentile(0.99)), 9) + format(result.mean))
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ results: [Measurement], benchmark: String, runs: Int) -> String {
        let entries = results.map { result in
            "{\"name\": \"\(result.name)\", \"median_ms\": \(format(result.percentile(0.5))), "
                + "\"p90_ms\": \(format(result.percentile(0.9))), \"p99_ms\": \(format(result.percentile(0.99))), "
                + "\"mean_ms\": \(format(result.mean))}"
        }
        return "{\"benchmark\": \"\(benchmark)\", \"runs\": \(runs), \"results\": [\(entries.joined(separator: ", "))]}"
    }

    private static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }

    private static func format(_ ms: Double) -> String {
        let scaled = (ms * 1000).rounded() / 1000
        var text = "\(scaled)"
        if let dot = text.firstIndex(of: ".") {
            let decimals = text.distance(from: dot, to: text.endIndex) - 1
            if decimals < 3 { text += String(repeating: "0", count: 3 - decimals) }
        }
        return text
    }
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// posix_spawn + waitpid of that one pid, with `stdio` on fds 0, 1 and 2; it must exit 0.
func spawnAndWait(_ arguments: [String], stdio: Int32) throws {
    let status = try spawnAndWait(arguments, stdio: [stdio, stdio, stdio])
    guard status == 0 else { throw BenchError("\(arguments[0]) ended with status \(status)") }
}

/// posix_spawn + waitpid of that one pid, with `stdio[k]` on fd k (nil: this process's);
/// its wait status.
func spawnAndWait(_ arguments: [String], stdio: [Int32?]) throws(BenchError) -> Int32 {
    let pid = try spawnProcess(arguments, stdio: stdio)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

/// posix_spawn with `stdio[k]` on fd k (nil: this process's); its pid (the caller waits).
func spawnProcess(_ arguments: [String], stdio: [Int32?]) throws(BenchError) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for (fd, source) in stdio.enumerated() {
        if let source { posix_spawn_file_actions_adddup2(&actions, source, Int32(fd)) }
    }
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let err = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
    guard err == 0 else { throw BenchError("posix_spawn \(arguments[0]): errno \(err)") }
    return pid
}

func findExecutable(_ name: String) -> String? {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") where access("\(directory)/\(name)", X_OK) == 0 {
        return "\(directory)/\(name)"
    }
    return nil
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}

/// Cold start of a backend on a drone: from the spawn request to ready (the port answers
/// HTTP), and to the first byte of a response read through the drone's ingress port.
struct ColdstartBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coldstart",
        abstract: "Request to ready, and to the first byte through ingress, of a minimal HTTP backend.",
        discussion: """
            The backend is busybox httpd in the busybox image, with the busybox policy (so a \
            cgroup with its limits). Each run spawns it on a drone in this process, waits for \
            ready (HTTP HEAD answered; probed at once after the spawn, then after 1, 2, 4 … ms, \
            at most every 50 ms), then connects to the drone's ingress port on loopback, sends a \
            signed preface and GET, reads the first byte of the response, and terminates the \
            backend. The phases show what dominates: loading (policy, image), spawning (the \
            sandbox until its command runs), waiting (until the port answers), ingress (ready \
            to the first byte).
            """)

    @Option(help: "Measured runs.")
    var runs = 200

    @Option(help: "Unmeasured runs before measuring.")
    var warmup = 5

    @Option(help: ArgumentHelp("Also write the JSON to this file.", valueName: "path"))
    var json: String?

    func validate() throws {
        if runs < 1 || runs > 100_000 { throw ValidationError("--runs must be 1...100000, got \(runs)") }
        if warmup < 0 { throw ValidationError("--warmup must not be negative") }
    }

    func run() async throws {
        let (runtime, drone) = try await benchDrone(maxBackends: 1)
        defer { runtime.finish() }
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let ingress = try IngressListener(drone: drone, secret: secret, logger: Logger(label: "hangar.bench"))
        defer { ingress.close() }
        let request = try httpdRequest(key: "bench")
        var samples: [String: [Duration]] = [:]
        let clock = ContinuousClock()
        for round in 0..<(warmup + runs) {
            let start = clock.now
            let backend = try drone.spawn(request)
            let state = await backend.reached(.ready)
            guard state.status == .ready else { throw BenchError("the backend did not become ready: \(state)") }
            let ready = clock.now
            try await BlockingPool.shared.run { () throws(BenchError) in
                try Self.firstByte(through: ingress.port, backend: backend.id, secret: secret)
            }
            let first = clock.now
            backend.terminate(.external)
            _ = await backend.terminated()
            guard round >= warmup else { continue }
            let at = Dictionary(backend.timeline.map { ($0.status, $0.at) }, uniquingKeysWith: { first, _ in first })
            guard let starting = at[.starting], let waiting = at[.waiting], let readyAt = at[.ready] else { continue }
            for (name, value) in [
                ("request to ready", ready - start), ("request to first byte", first - start),
                ("loading", starting - start), ("spawning", waiting - starting), ("waiting for the port", readyAt - waiting),
                ("ingress to first byte", first - ready),
            ] {
                samples[name, default: []].append(value)
            }
        }
        let order = [
            "request to ready", "request to first byte", "loading", "spawning", "waiting for the port",
            "ingress to first byte",
        ]
        let results = order.map { Measurement(name: $0, samples: samples[$0] ?? []) }.filter { !$0.samples.isEmpty }
        print(Measurement.table(results, title: "cold start of busybox httpd on a drone, \(runs) runs"))
        let report = Measurement.json(results, benchmark: "coldstart", runs: runs)
        print(report)
        try writeReport(report, to: json)
    }

    /// Connects to the ingress port, asks for /hostname and reads the first byte.
    static func firstByte(through port: UInt16, backend: BackendID, secret: [UInt8]) throws(BenchError) {
        let fd = hg_connect_tcp4("127.0.0.1", port, 0)
        guard fd >= 0 else { throw BenchError("connecting to the ingress port: \(String(cString: strerror(-fd)))") }
        defer { close(fd) }
        let message = IngressPreface.make(backend: backend, secret: secret) + "GET /hostname HTTP/1.0\r\n\r\n"
        _ = message.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
        // The drone's answer line, then the response's first byte.
        guard case .some(nil) = IngressPreface.readAnswer(from: fd) else { throw BenchError("the ingress refused") }
        var byte: UInt8 = 0
        guard read(fd, &byte, 1) == 1 else { throw BenchError("no response through ingress") }
    }
}

/// Many backends spawned at once: how long until all are ready, with the drone's spawns
/// limited to one thread and with its full pool of spawning threads, in turns.
struct BurstBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "burst",
        abstract: "N backends spawned at once: time until all are ready, one spawning thread against the pool.",
        discussion: """
            Spawns N busybox httpd backends (busybox policy) on a drone in this process in one \
            go, waits until every one is ready, and terminates them all. Each round runs twice: \
            with sandbox creation limited to one thread (what a single spawner would do) and with \
            the runtime's pool of spawning threads.
            """)

    @Option(help: "Backends per burst.")
    var backends = 200

    @Option(help: "Measured rounds per contender.")
    var rounds = 3

    @Option(help: ArgumentHelp("Also write the JSON to this file.", valueName: "path"))
    var json: String?

    func validate() throws {
        if backends < 1 || backends > 2000 { throw ValidationError("--backends must be 1...2000, got \(backends)") }
        if rounds < 1 || rounds > 100 { throw ValidationError("--rounds must be 1...100, got \(rounds)") }
    }

    func run() async throws {
        let (runtime, drone) = try await benchDrone(maxBackends: backends)
        defer { runtime.finish() }
        var request = try httpdRequest(key: "burst")
        let contenders = [("one spawning thread", 1), ("spawning pool", SandboxRuntime.spawningThreads)]
        var samples: [String: [Duration]] = [:]
        for _ in 0..<rounds {
            for (name, threads) in contenders {
                SandboxRuntime.limitSpawningThreads(to: threads)
                let start = ContinuousClock.now
                var all: [Backend] = []
                for index in 0..<backends {
                    request.key = try KeyName("burst-\(index)")
                    all.append(try drone.spawn(request))
                }
                for backend in all {
                    let state = await backend.reached(.ready)
                    guard state.status == .ready else { throw BenchError("backend \(backend.id) did not become ready: \(state)") }
                }
                samples[name, default: []].append(ContinuousClock.now - start)
                for backend in all { backend.terminate(.external) }
                for backend in all { _ = await backend.terminated() }
            }
        }
        SandboxRuntime.limitSpawningThreads(to: SandboxRuntime.spawningThreads)
        let results = contenders.map { Measurement(name: $0.0, samples: samples[$0.0] ?? []) }
        print(Measurement.table(results, title: "\(backends) backends spawned at once, until all are ready, \(rounds) rounds"))
        let report = Measurement.json(results, benchmark: "burst", runs: rounds)
        print(report)
        try writeReport(report, to: json)
    }
}

func writeReport(_ report: String, to path: String?) throws {
    guard let path else { return }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BenchError("cannot write \(path): errno \(errno)") }
    _ = report.withCString { write(fd, $0, strlen($0)) }
    close(fd)
}

/// What idle backends cost: the drone's own memory and the host's, per backend.
struct IdleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "Memory per idle backend: the drone's RSS, the host's used memory and slab, with N backends.",
        discussion: """
            Spawns N busybox httpd backends (busybox policy) on a drone in this process, waits \
            until all are ready and idle, and compares the drone's RSS and the host's MemAvailable \
            and Slab (kernel objects: namespaces, mounts, tmpfs, sockets) with the figures before. \
            Then terminates them all.
            """)

    @Option(help: "How many backends.")
    var backends = 500

    func validate() throws {
        if backends < 1 || backends > 5000 { throw ValidationError("--backends must be 1...5000, got \(backends)") }
    }

    /// kB values from /proc/meminfo and /proc/self/status.
    static func kilobytes(_ file: String, _ key: String) -> Double {
        for line in (readTextFile(file) ?? "").split(separator: "\n") where line.hasPrefix(key + ":") {
            return Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        return 0
    }

    func run() async throws {
        let (runtime, drone) = try await benchDrone(maxBackends: backends)
        defer { runtime.finish() }
        var request = try httpdRequest(key: "idle")
        let rssBefore = Self.kilobytes("/proc/self/status", "VmRSS")
        let availableBefore = Self.kilobytes("/proc/meminfo", "MemAvailable")
        let slabBefore = Self.kilobytes("/proc/meminfo", "Slab")
        let start = ContinuousClock.now
        var all: [Backend] = []
        for index in 0..<backends {
            request.key = try KeyName("idle-\(index)")
            all.append(try drone.spawn(request))
        }
        for backend in all {
            let state = await backend.reached(.ready)
            guard state.status == .ready else { throw BenchError("backend \(backend.id) did not become ready: \(state)") }
        }
        let ready = ContinuousClock.now - start
        try await Task.sleep(for: .seconds(2))  // idle, settled
        let n = Double(backends)
        let rss = (Self.kilobytes("/proc/self/status", "VmRSS") - rssBefore) / n
        let used = (availableBefore - Self.kilobytes("/proc/meminfo", "MemAvailable")) / n
        let slab = (Self.kilobytes("/proc/meminfo", "Slab") - slabBefore) / n
        for backend in all { backend.terminate(.external) }
        for backend in all { _ = await backend.terminated() }
        let rows = [
            ("drone RSS per backend", rss), ("host memory used per backend", used), ("kernel slab per backend", slab),
        ]
        print("\(backends) idle backends (busybox httpd), all ready after \(ready)")
        for (name, value) in rows { print(name.padding(30) + "\(Int(value.rounded())) KiB") }
        let json = rows.map { "\"\($0.0.replacing(" ", with: "_"))_kib\": \(Int($0.1.rounded()))" }.joined(separator: ", ")
        print("{\"benchmark\": \"idle\", \"backends\": \(backends), \(json)}")
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}

/// A drone in this process for the drone benchmarks: no log files, no data directories.
func benchDrone(maxBackends: Int) async throws -> (SandboxRuntime, Drone) {
    let runtime = try await commandLineErrors {
        try SandboxRuntime(configuration: .fromEnvironment(), logger: Logger(label: "hangar.bench"))
    }
    var configuration = DroneConfiguration()
    configuration.logDirectory = nil
    configuration.maxBackends = maxBackends
    configuration.dataRoot = nil
    // The backends' lives are not logged while they are measured: warnings and errors only.
    var logger = Logger(label: "hangar.bench")
    logger.logLevel = .warning
    let drone = try Drone(
        runtime: runtime, policies: PolicyLoader.fromEnvironment(), images: ImageStore.fromEnvironment(),
        configuration: configuration, logger: logger)
    return (runtime, drone)
}

/// The minimal HTTP backend of the drone benchmarks: busybox httpd under the busybox policy.
func httpdRequest(key: String) throws -> SpawnRequest {
    var request = SpawnRequest(key: try KeyName(key), image: try ImageName("busybox"))
    request.command = ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/etc"]
    return request
}
