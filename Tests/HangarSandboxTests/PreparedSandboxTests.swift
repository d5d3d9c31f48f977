import Glibc
import HangarCore
import HangarSandbox
import HangarTestSupport
import Testing

/// Sandboxes created ahead (`keepPrepared`) and given their command at spawn: the same
/// sandbox as a fresh one, the same errors, and nothing left once they are dropped.
@Suite("Prepared sandboxes", .serialized, .timeLimit(.minutes(2)))
struct PreparedSandboxTests {
    let before = HostState.capture()
    let runtime = TestSandbox.runtime

    /// Drops every prepared sandbox, then compares the host with how the test found it.
    func dropAndExpectHostClean(sourceLocation: SourceLocation = #_sourceLocation) async {
        await runtime.dropPrepared()
        await expectHostRestored(before, "prepared sandboxes left something on the host", sourceLocation: sourceLocation)
    }

    /// Waits (at most five seconds) until `count` sandboxes shaped like `spec` are ready.
    func waitForPrepared(_ count: Int, like spec: SandboxSpec) async {
        for _ in 0..<500 where runtime.preparedCount(like: spec) < count {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test("the handed-over command gets its arguments, environment, working directory and fds")
    func handOff() async throws {
        let template = try TestSandbox.shell("true")
        try runtime.keepPrepared(1, like: template)
        #expect(runtime.preparedCount(like: template) == 1)

        let extra = try TestPipe()
        var spec = try TestSandbox.shell(
            "echo \"$GREETING\" \"$1\"; pwd; echo via-fd-3 >&3; exec sleep 30", arguments: ["first argument"])
        spec.setEnvironment("GREETING", "hello")
        spec.workingDirectory = "/tmp"
        spec.extraFDs = [extra.write]
        let started = try await TestSandbox.start(spec)
        close(extra.write)
        #expect(started.sandbox.prepared)
        let command = try await TestSandbox.commandPID(of: started.sandbox, running: "sleep")
        #expect(entries(of: "/proc/\(command)/fd").sorted() == ["0", "1", "2", "3"], "only stdio and the declared fd")
        #expect(entries(of: "/proc/\(started.sandbox.pid)/fd").sorted() == ["0", "1", "2"], "init holds no hand-off fd")
        started.sandbox.kill()
        let viaFD = await extra.readAll()
        let result = try await started.finish()
        #expect(result.status == .signaled(SIGKILL))
        #expect(result.stdout == "hello first argument\n/tmp\n")
        #expect(viaFD == "via-fd-3\n")

        // The pool is topped up in the background.
        await waitForPrepared(1, like: template)
        #expect(runtime.preparedCount(like: template) == 1)
        await dropAndExpectHostClean()
    }

    @Test("a prepared sandbox is as confined as a fresh one, and its command runs at normal priority")
    func confinement() async throws {
        let template = try TestSandbox.shell("true")
        try runtime.keepPrepared(1, like: template)
        let script = """
            echo $$; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc/1/fd | tr '\\n' ' '; echo
            grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '
            tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; hostname; id -u
            cut -d ' ' -f 19 /proc/self/stat
            """
        let started = try await TestSandbox.start(try TestSandbox.shell(script))
        #expect(started.sandbox.prepared)
        let result = try await started.finish()
        #expect(result.status == .exited(0), "\(result.stderr)")
        let expected = """
            2
            hangar-init standby 4 3 \("")
            0 1 2 \("")
            CapPrm: 0000000000000000
            CapEff: 0000000000000000
            CapBnd: 0000000000000000
            CapAmb: 0000000000000000
            NoNewPrivs: 1
            Seccomp: 2
            lo
            sandbox
            0
            0

            """
        #expect(result.stdout == expected)
        await dropAndExpectHostClean()
    }

    @Test("a command that cannot start fails the spawn as it would in a fresh sandbox")
    func failures() async throws {
        let template = try TestSandbox.shell("true")
        try runtime.keepPrepared(1, like: template)

        let missing = SandboxSpec(image: try TestSandbox.image("busybox"), command: ["no-such-command"])
        let notFound = await #expect(throws: SandboxError.self) { try await runtime.spawn(missing) }
        #expect(notFound?.code == .exec)
        #expect(notFound?.message == "command not found in the sandbox: no-such-command")

        await waitForPrepared(1, like: template)
        var elsewhere = try TestSandbox.shell("true")
        elsewhere.workingDirectory = "/no/such/dir"
        let badDirectory = await #expect(throws: SandboxError.self) { try await runtime.spawn(elsewhere) }
        #expect(badDirectory?.step == .workdir)
        #expect(badDirectory?.message.hasPrefix("working directory /no/such/dir failed: ENOENT") == true)

        await waitForPrepared(1, like: template)
        #expect(runtime.preparedCount(like: template) == 1)
        await dropAndExpectHostClean()
    }

    @Test("a spec of another shape, or too large to hand over, gets a fresh sandbox")
    func otherShapes() async throws {
        let template = try TestSandbox.shell("true")
        try runtime.keepPrepared(1, like: template)

        var renamed = try TestSandbox.shell("hostname")
        renamed.hostname = try Hostname("elsewhere")
        let started = try await TestSandbox.start(renamed)
        #expect(!started.sandbox.prepared)
        #expect(try await started.finish().stdout == "elsewhere\n")

        var large = try TestSandbox.shell("echo ${#BIG}")
        large.setEnvironment("BIG", String(repeating: "x", count: 100_000))
        let big = try await TestSandbox.start(large)
        #expect(!big.sandbox.prepared)
        #expect(try await big.finish().stdout == "100000\n")

        #expect(runtime.preparedCount(like: template) == 1, "neither spawn took the prepared sandbox")
        await dropAndExpectHostClean()
    }

    @Test("a prepared sandbox that ended before its hand-off is replaced by a fresh one")
    func endedBeforeHandOff() async throws {
        let template = try TestSandbox.shell("true")
        try runtime.keepPrepared(1, like: template)
        // Kill the waiting init: it is the only sandbox process, and this test made it.
        let waiting = HostState.processesWithSandboxUIDs().compactMap { Int32($0.split(separator: " ")[0]) }
        #expect(waiting.count == 1)
        for pid in waiting where readFile("/proc/\(pid)/cmdline")?.hasPrefix("hangar-init\0standby") == true {
            kill(pid, SIGKILL)
        }
        let started = try await TestSandbox.start(try TestSandbox.shell("echo still-works"))
        #expect(!started.sandbox.prepared, "the hand-off found the prepared sandbox gone")
        let result = try await started.finish()
        #expect(result.stdout == "still-works\n")
        await dropAndExpectHostClean()
    }

    @Test("bad arguments to keepPrepared are refused")
    func badCount() async throws {
        let template = try TestSandbox.shell("true")
        let error = #expect(throws: SandboxError.self) { try runtime.keepPrepared(-1, like: template) }
        #expect(error?.code == .invalidSpec)
        let root = try SymlinkImage(replacing: "proc", with: "/etc")
        defer { root.remove() }
        var broken = template
        broken.image = try Image(root: root.path)
        let setup = #expect(throws: SandboxError.self) { try runtime.keepPrepared(1, like: broken) }
        #expect(setup?.errno == ELOOP)
        #expect(setup?.message.contains("/proc") == true, "\(setup?.message ?? "no error")")
        #expect(runtime.preparedCount(like: broken) == 0)
        await dropAndExpectHostClean()
    }
}
