import Glibc
import HangarCore
import HangarSandbox
import Logging
import Synchronization

/// What a command printed and how it ended.
public struct RunResult: Sendable {
    public var outcome: Outcome
    public var stdout: String
    public var stderr: String
    public var status: ExitStatus { outcome.status }
}

/// Shared helpers for tests that create real sandboxes (as root, on the real kernel).
public enum TestSandbox {
    /// The repository's root, found from this file's path.
    public static let repositoryRoot: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/HangarTestSupport/TestSandbox.swift
        return parts.joined(separator: "/")
    }()

    /// The image store the Makefile builds.
    public static var images: ImageStore {
        if let dir = getenv("HANGAR_IMAGES") { return ImageStore(directory: String(cString: dir)) }
        return ImageStore(directory: repositoryRoot + "/images")
    }

    /// One runtime for the whole test process, as in a drone.
    public static let runtime: SandboxRuntime = {
        do {
            return try SandboxRuntime(logger: Logger(label: "hangar.tests"))
        } catch {
            fatalError("these tests need root and a built hangar-init: \(error)")
        }
    }()

    /// A named image (built by `make images`).
    public static func image(_ name: String) throws -> Image {
        try images.image(try ImageName(name))
    }

    /// A spec running `sh -c script` in the busybox image (or `image`); `arguments` become
    /// the script's $1, $2, ...
    public static func shell(_ script: String, image: String = "busybox", arguments: [String] = []) throws -> SandboxSpec {
        SandboxSpec(image: try self.image(image), command: ["sh", "-c", script, "sh"] + arguments)
    }

    /// Runs `spec` to the end, collecting its output (stdin is /dev/null).
    public static func run(_ spec: SandboxSpec) async throws -> RunResult {
        let started = try await start(spec)
        return try await started.finish()
    }

    /// Starts `spec` with its output captured; finish() collects it.
    public static func start(_ spec: SandboxSpec) async throws -> Started {
        var spec = spec
        let out = try Pipe()
        let err = try Pipe()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(null) }
        spec.stdio = (null, out.write, err.write)
        let sandbox: Sandbox
        do {
            sandbox = try await runtime.spawn(spec)
        } catch {
            out.closeBoth()
            err.closeBoth()
            throw error
        }
        close(out.write)
        close(err.write)
        return Started(sandbox: sandbox, stdout: out.read, stderr: err.read)
    }

    /// The host pid of init's child once it runs the program `comm` (at most a second).
    public static func commandPID(of sandbox: Sandbox, running comm: String) async throws -> String {
        let initPID = sandbox.pid
        for _ in 0..<100 {
            let children = readFile("/proc/\(initPID)/task/\(initPID)/children") ?? ""
            if let child = children.split(separator: " ").first.map(String.init), readFile("/proc/\(child)/comm") == comm + "\n" { return child }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestFailure("init \(initPID) has no child running \(comm)")
    }

    /// A sandbox whose output is being captured.
    public struct Started: Sendable {
        public let sandbox: Sandbox
        let stdout: Int32
        let stderr: Int32

        /// Waits for the end; returns the status and everything printed.
        public func finish() async throws -> RunResult {
            async let out = readAll(stdout)
            async let err = readAll(stderr)
            let outcome = await sandbox.outcome()
            return RunResult(outcome: outcome, stdout: await out, stderr: await err)
        }
    }
}

/// A close-on-exec pipe, for tests.
public struct TestPipe: Sendable {
    public let read: Int32
    public let write: Int32

    public init() throws {
        let pipe = try Pipe()
        read = pipe.read
        write = pipe.write
    }

    /// Reads to EOF (close the write end first), then closes the read end.
    public func readAll() async -> String { await HangarTestSupport.readAll(read) }
}

/// A close-on-exec pipe.
struct Pipe {
    let read: Int32
    let write: Int32

    init() throws {
        (read, write) = try makePipe()
    }

    func closeBoth() {
        close(read)
        close(write)
    }
}

/// Reads fd to EOF on a thread of its own, then closes it; what is read so far is also
/// appended to `progress`.
func readAll(_ fd: Int32, into progress: OutputBuffer? = nil) async -> String {
    await withCheckedContinuation { continuation in
        let started = startThread {
            let bytes = (try? readToEnd(fd) { progress?.append($0) }) ?? []
            close(fd)
            continuation.resume(returning: String(decoding: bytes, as: UTF8.self))
        }
        if started != 0 {
            close(fd)
            continuation.resume(returning: "")
        }
    }
}

/// A test helper failed (not the behaviour under test).
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Bytes read so far, shared between a reader thread and a test.
final class OutputBuffer: Sendable {
    private let bytes = Mutex<[UInt8]>([])
    func append(_ more: ArraySlice<UInt8>) { bytes.withLock { $0 += more } }
    var text: String { bytes.withLock { String(decoding: $0, as: UTF8.self) } }
}
