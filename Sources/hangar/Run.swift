import ArgumentParser
import Dispatch
import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox
import Logging

/// `hangar run`: one command in a fresh sandbox, stdio attached.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a fresh sandbox and exit with its status.",
        discussion: """
            The sandbox runs with the image's policy (policies/IMAGE.toml, else policies/default.toml, \
            else the built-in defaults; see docs/POLICY.md) or the one given with --policy. Flags \
            change it: --memory, --pids and --upper-size are requests, which may lower a limit or \
            raise it up to the policy's [limits.max]. Everything the sandbox creates (upper layer, \
            mounts, namespaces, cgroups) is removed when the command ends, also when it is killed or \
            hangar receives SIGINT or SIGTERM, which are passed on to the command first.
            """
    )

    @Option(name: .long, help: "The image to run (a folder of the image store).")
    var image: String = "busybox"

    @Option(name: .long, help: ArgumentHelp("An image root directory instead of a named image.", valueName: "dir"))
    var imagePath: String?

    @Option(name: .long, help: ArgumentHelp("A policy file instead of the image's own.", valueName: "file"))
    var policy: String?

    @Option(name: .long, help: ArgumentHelp("Memory limit, e.g. 256m.", valueName: "size"))
    var memory: String?

    @Option(name: .long, help: ArgumentHelp("Maximum number of processes and threads.", valueName: "n"))
    var pids: Int?

    @Option(name: .customLong("env"), help: ArgumentHelp("Set an environment variable.", valueName: "name=value"))
    var environment: [String] = []

    @Option(name: .long, help: ArgumentHelp("Working directory inside the sandbox.", valueName: "dir"))
    var workdir: String?

    @Option(name: .long, help: "The sandbox's hostname.")
    var hostname: String = "sandbox"

    @Option(name: .long, help: ArgumentHelp("Size limit of the writable layer.", valueName: "size"))
    var upperSize: String?

    @Flag(name: .long, help: "Make the root read-only (writes only to /dev/shm and the policy's read-write mounts).")
    var readOnly = false

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after -- (default: the policy's).")
    var command: [String] = []

    func validate() throws {
        if let pids, pids < 1 { throw ValidationError("--pids must be at least 1, got \(pids)") }
    }

    func spec() throws -> SandboxSpec {
        let image: Image
        let loader = PolicyLoader.fromEnvironment()
        var policy: Policy
        if let imagePath {
            image = try Image(resolving: imagePath)
            policy = try self.policy.map { try loader.load(path: $0) } ?? loader.policy(forImage: try ImageName("default"))
        } else {
            let name = try ImageName(self.image)
            image = try ImageStore.fromEnvironment().image(name)
            policy = try self.policy.map { try loader.load(path: $0) } ?? loader.policy(forImage: name)
        }
        var request = Policy.Limits.unset
        request.memoryMax = try memory.map { try ByteSize(parsing: $0) }
        request.pidsMax = pids
        request.upperSize = try upperSize.map { try ByteSize(parsing: $0) }
        policy = try policy.applying(request: request, from: "the command line")
        if readOnly { policy.filesystem.readOnlyRoot = true }
        if let workdir { policy.process.workdir = workdir }
        guard !command.isEmpty || !policy.process.command.isEmpty else {
            throw ValidationError("give the command after --, e.g. hangar run -- sh -c 'echo hi' (the policy has none)")
        }
        var spec = try policy.spec(
            image: image, command: command.isEmpty ? nil : command, host: .fromEnvironment())
        for assignment in environment {
            guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
                throw ValidationError("--env expects NAME=VALUE, got \"\(assignment)\"")
            }
            spec.setEnvironment(String(assignment[..<equals]), String(assignment[assignment.index(after: equals)...]))
        }
        spec.hostname = try Hostname(hostname)
        return spec
    }

    func run() async throws {
        let spec = try await commandLineErrors { try self.spec() }
        let forwarder = SignalForwarder()
        let runtime = try await commandLineErrors {
            try SandboxRuntime(configuration: .fromEnvironment(), logger: Logger(label: "hangar"))
        }
        let sandbox: Sandbox
        do {
            sandbox = try await commandLineErrors { try await runtime.spawn(spec) }
        } catch {
            runtime.finish()
            throw error
        }
        forwarder.attach(sandbox)
        let outcome = await sandbox.outcome()
        forwarder.stop()
        runtime.finish()
        if outcome.reason != .exited || outcome.status.isSignal {
            FileHandleStandardError.write("hangar: \(outcome)\n")
        }
        throw ExitCode(outcome.status.shellStatus)
    }
}

/// Passes SIGINT, SIGTERM and SIGHUP on to the sandbox (its init passes them to the
/// command); a second SIGINT or SIGTERM, or ten seconds without exit, kills the sandbox.
/// It listens from before the spawn: a signal that arrives while the sandbox is being
/// created is delivered as soon as it exists.
final class SignalForwarder: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "hangar.signals")
    private var sandbox: Sandbox?
    private var pending: [Int32] = []
    private var received = 0

    init() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            Glibc.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [self] in deliver(sig) }
            source.resume()
            sources.append(source)
        }
    }

    /// From now on, signals go to `sandbox`, starting with any that already arrived.
    func attach(_ sandbox: Sandbox) {
        queue.sync {
            self.sandbox = sandbox
            let early = pending
            pending = []
            received = 0
            early.forEach(deliver)
        }
    }

    private func deliver(_ sig: Int32) {
        guard let sandbox else {
            pending.append(sig)
            return
        }
        received += 1
        if received > 1 {
            sandbox.kill()
            return
        }
        sandbox.signal(sig)
        queue.asyncAfter(deadline: .now() + 10) { sandbox.kill() }
    }

    func stop() {
        queue.sync { sources.forEach { $0.cancel() } }
    }
}

/// Runs `body`, turning Hangar's errors into what a command line reports: a bad value
/// is a usage error (64), a sandbox error is printed and exits as a shell would (127 not
/// found, 126 not executable, 125 our own failure).
func commandLineErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as InvalidValue {
        throw ValidationError(error.description)
    } catch let error as SandboxError {
        FileHandleStandardError.write("hangar: \(error.message)\n")
        if error.code == .exec { throw ExitCode(error.errno == ENOENT ? 127 : 126) }
        throw ExitCode(125)
    } catch let error as PolicyError {
        FileHandleStandardError.write("hangar: \(error)\n")
        throw ExitCode(65)  // EX_DATAERR: the policy (or a request against it) is wrong
    }
}

enum FileHandleStandardError {
    static func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
