import Glibc
import HangarCore
import HangarSandbox
import HangarTestSupport
import Testing

/// Bad input gives a clear error and leaves nothing behind.
@Suite("Bad input", .serialized, .timeLimit(.minutes(2)))
struct BadInputTests {
    let before = HostState.capture()

    func spawnError(_ spec: SandboxSpec) async -> SandboxError? {
        do {
            let sandbox = try await TestSandbox.runtime.spawn(spec)
            sandbox.kill()
            _ = await sandbox.wait()
            return nil
        } catch {
            return error
        }
    }

    @Test("a bind source with a symlink on its path is refused (it could have been swapped after the check)")
    func bindThroughSymlink() async throws {
        let link = "/tmp/hangar-bind-link-\(UInt32.random(in: 0...UInt32.max))"
        try #require(symlink("/etc", link) == 0)
        defer { unlink(link) }
        var spec = try TestSandbox.shell("true")
        spec.mounts = [.bind(source: link, target: "/host", readOnly: true)]
        let error = await spawnError(spec)
        #expect(error?.errno == ELOOP)
        #expect(error?.message.contains("a bind source may not contain symlinks") == true, "\(error?.message ?? "")")
        await expectHostRestored(before)
    }

    @Test("a missing image is refused, naming it")
    func missingImage() async throws {
        #expect(throws: SandboxError.self) { try TestSandbox.images.image(try ImageName("no-such-image")) }
        do {
            _ = try TestSandbox.images.image(try ImageName("no-such-image"))
        } catch let error as SandboxError {
            #expect(error.code == .image)
            #expect(error.message.contains("no-such-image"))
        }
        #expect(throws: SandboxError.self) { try Image(root: "relative/path") }
        #expect(throws: InvalidValue.self) { try ImageName("../etc") }
    }

    @Test("a command that does not exist is an exec error")
    func commandNotFound() async throws {
        let spec = SandboxSpec(image: try TestSandbox.image("busybox"), command: ["no-such-command", "x"])
        let error = await spawnError(spec)
        #expect(error?.code == .exec)
        #expect(error?.errno == ENOENT)
        #expect(error?.message == "command not found in the sandbox: no-such-command")
        await expectHostRestored(before)
    }

    @Test("a command that is not executable is an exec error")
    func notExecutable() async throws {
        let spec = SandboxSpec(image: try TestSandbox.image("busybox"), command: ["/etc/passwd"])
        let error = await spawnError(spec)
        #expect(error?.code == .exec)
        #expect(error?.errno == EACCES)
        await expectHostRestored(before)
    }

    @Test("empty argv, NUL in env or argv, a relative workdir are refused before anything is created")
    func invalidSpecs() async throws {
        let image = try TestSandbox.image("busybox")
        var specs: [SandboxSpec] = [
            SandboxSpec(image: image, command: []),
            SandboxSpec(image: image, command: [""]),
            SandboxSpec(image: image, command: ["sh", "a\u{0}b"]),
        ]
        var env = SandboxSpec(image: image, command: ["true"])
        env.setEnvironment("GOOD", "va\u{0}lue")
        specs.append(env)
        var envName = SandboxSpec(image: image, command: ["true"])
        envName.setEnvironment("A=B", "x")
        specs.append(envName)
        var workdir = SandboxSpec(image: image, command: ["true"])
        workdir.workingDirectory = "tmp"
        specs.append(workdir)
        for spec in specs {
            let error = await spawnError(spec)
            #expect(error?.code == .invalidSpec, "\(spec.command) \(spec.environment)")
        }
        await expectHostRestored(before)
    }

    @Test("an overlong or malformed hostname is refused")
    func hostnames() throws {
        #expect(throws: InvalidValue.self) { try Hostname(String(repeating: "a", count: 65)) }
        #expect(throws: InvalidValue.self) { try Hostname("-bad") }
        #expect(throws: InvalidValue.self) { try Hostname("a..b") }
        #expect(throws: InvalidValue.self) { try Hostname("with space") }
        #expect(throws: InvalidValue.self) { try Hostname("nul\u{0}") }
        #expect(try Hostname("ok-1.example").rawValue == "ok-1.example")
    }

    @Test("a missing working directory names it")
    func missingWorkdir() async throws {
        var spec = SandboxSpec(image: try TestSandbox.image("busybox"), command: ["true"])
        spec.workingDirectory = "/does/not/exist"
        let error = await spawnError(spec)
        #expect(error?.step == .workdir)
        #expect(error?.message.contains("/does/not/exist") == true)
        await expectHostRestored(before)
    }

    @Test(
        "an image whose mount points are symlinks pointing outside fails closed",
        arguments: [("proc", "/etc"), ("dev", "/etc"), ("proc", "../../../../../etc"), ("dev", "../../../tmp")])
    func symlinkedMountPoints(mountPoint: String, target: String) async throws {
        let root = try SymlinkImage(replacing: mountPoint, with: target)
        defer { root.remove() }
        let canary = try TreeDigest(root: "/etc")
        let error = await spawnError(SandboxSpec(image: try Image(root: root.path), command: ["true"]))
        #expect(error?.code == .setup)
        #expect(error?.message.contains("/\(mountPoint)") == true, "\(error?.message ?? "no error")")
        #expect(error?.errno == ELOOP)
        #expect(try TreeDigest(root: "/etc") == canary)
        #expect(try TreeDigest(root: root.path) == root.digest, "the image is unchanged")
        await expectHostRestored(before)
    }
}

extension BadInputTests {
    @Test(
        "symlinks in the image at /dev/null, /etc/hosts and /tmp resolve inside the sandbox, never to the host",
        arguments: [("dev/null", "/tmp/hangar-host-secret"), ("etc/hosts", "/tmp/hangar-host-secret"), ("tmp", "/tmp")])
    func symlinksResolveInside(path: String, target: String) async throws {
        let secret = "/tmp/hangar-host-secret"
        let fd = open(secret, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        _ = write(fd, "host secret\n", 12)
        close(fd)
        defer { unlink(secret) }
        let root = try SymlinkImage(replacing: path, with: target)
        defer { root.remove() }
        let script = "cat /\(path) 2>&1; cat /\(path)/hangar-host-secret 2>&1; echo end"
        var spec = SandboxSpec(image: try Image(root: root.path), command: ["/bin/busybox", "sh", "-c", script])
        spec.stdio = (0, 1, 2)
        let result = try await TestSandbox.run(spec)
        #expect(!result.stdout.contains("host secret"), "\(result.stdout)")
        #expect(result.stdout.hasSuffix("end\n"))
        #expect(try TreeDigest(root: root.path) == root.digest, "the image is unchanged")
        await expectHostRestored(before)
    }
}

/// A small image (busybox and a few dirs) in which one mount point is a symlink.
struct SymlinkImage {
    let path: String
    let digest: TreeDigest

    init(replacing mountPoint: String, with target: String) throws {
        var template = Array("/tmp/hangar-image-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: errno \(errno)") }
        path = String(cString: made)
        for dir in ["bin", "etc", "tmp", "dev"] { mkdir(path + "/" + dir, 0o755) }
        let busybox = try TestSandbox.image("busybox").root + "/bin/busybox"
        try copyFile(busybox, to: path + "/bin/busybox")
        symlink("busybox", path + "/bin/true")
        if mountPoint == "dev" || mountPoint == "tmp" { rmdir(path + "/" + mountPoint) }
        guard symlink(target, path + "/" + mountPoint) == 0 else {
            throw TestFailure("symlink \(mountPoint): errno \(errno)")
        }
        digest = try TreeDigest(root: path)
    }

    func remove() {
        for entry in ["bin/busybox", "bin/true", "bin", "etc/hosts", "etc", "tmp", "dev/null", "dev/shm", "dev/pts", "dev", "proc"] {
            if unlink(path + "/" + entry) != 0 { rmdir(path + "/" + entry) }
        }
        rmdir(path)
    }
}

func copyFile(_ source: String, to destination: String) throws {
    let input = open(source, O_RDONLY | O_CLOEXEC)
    let output = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    defer {
        close(input)
        close(output)
    }
    guard input >= 0, output >= 0 else { throw TestFailure("copy \(source): errno \(errno)") }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(input, &buffer, buffer.count)
        if n <= 0 { break }
        _ = write(output, buffer, n)
    }
}
