import Glibc
import Synchronization

/// The built `hangar` binary run as a child process, with its output captured.
public final class HangarProcess: Sendable {
    public let pid: pid_t
    private let stdout: Int32
    private let collected = OutputBuffer()
    private let reader: Task<String, Never>
    /// Standard error is drained as it comes too: a role that logs a lot (a drone with a
    /// thousand backends) would otherwise block on a full pipe.
    private let errorReader: Task<String, Never>

    /// `.build/<configuration>/hangar`, next to the test runner.
    public static var executable: String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = String(decoding: buffer.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            + "/hangar"
    }

    /// What it printed and how it ended.
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `arguments` to the end.
    public static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Result {
        try await start(arguments, environment: environment).finish()
    }

    /// Runs another program (a real client such as curl) to its end.
    public static func run(program: String, _ arguments: [String]) async throws -> Result {
        try await start(program: program, arguments).finish()
    }

    /// Starts `hangar arguments…` with stdin on /dev/null, and `environment` on top of
    /// this process's.
    public static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> HangarProcess {
        try start(program: executable, arguments, environment: environment)
    }

    /// Starts `program arguments…` with stdin on /dev/null.
    public static func start(program: String, _ arguments: [String], environment: [String: String] = [:]) throws
        -> HangarProcess
    {
        let out = try Pipe()
        let err = try Pipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out.write, 1)
        posix_spawn_file_actions_adddup2(&actions, err.write, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default dispositions and an empty mask, whatever the test runner has.
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let path = program
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var inherited: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            let name = String(text.prefix { $0 != "=" })
            if environment[name] == nil { inherited.append(text) }
            entry += 1
        }
        let envp = (inherited + environment.map { "\($0.key)=\($0.value)" }).map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        close(out.write)
        close(err.write)
        guard spawned == 0 else {
            close(out.read)
            close(err.read)
            throw TestFailure("posix_spawn \(path): errno \(spawned)")
        }
        let process = HangarProcess(pid: pid, stdout: out.read, stderr: err.read)
        _ = killedAtExit
        running.withLock { $0[pid] = process }
        return process
    }

    /// Whatever is still running when the test process exits is killed: a drone orphaned
    /// by a failed test would keep its sandboxes, and the next run would find them.
    private static let killedAtExit: Void = {
        atexit {
            for pid in HangarProcess.running.withLock({ Array($0.keys) }) { kill(pid, SIGKILL) }
        }
    }()

    /// Processes started and not yet finished.
    private static let running = Mutex<[pid_t: HangarProcess]>([:])

    /// Ends what earlier tests started and left running because they failed before their
    /// clean-up (SIGTERM, then SIGKILL after 10 s), so that one failure does not become
    /// the next test's: call it before starting a cluster.
    public static func endLeftovers() async {
        let left = running.withLock { Array($0.values) }
        for process in left { process.signal(SIGTERM) }
        for process in left {
            let deadline = ContinuousClock.now + .seconds(10)
            while kill(process.pid, 0) == 0, ContinuousClock.now < deadline {
                var status: Int32 = 0
                if waitpid(process.pid, &status, WNOHANG) == process.pid { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
            process.signal(SIGKILL)
            _ = try? await process.finish()
        }
    }

    private init(pid: pid_t, stdout: Int32, stderr: Int32) {
        self.pid = pid
        self.stdout = stdout
        let collected = self.collected
        self.reader = Task.detached { await readAll(stdout, into: collected) }
        self.errorReader = Task.detached { await readAll(stderr) }
    }

    /// What it has printed on stdout so far.
    public var output: String { collected.text }

    /// Sends a signal.
    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits until stdout has printed `text` (at most ten seconds).
    public func waitForOutput(_ text: String) async throws {
        for _ in 0..<1000 {
            if collected.text.contains(text) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestFailure("hangar did not print \(text.debugDescription)")
    }

    /// Waits for the exit (the status as a shell reports it) and the output.
    public func finish() async throws -> Result {
        let errText = await errorReader.value
        let outText = await reader.value
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        _ = Self.running.withLock { $0.removeValue(forKey: pid) }
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, stdout: outText, stderr: errText)
    }
}
