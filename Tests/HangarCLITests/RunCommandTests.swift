import Glibc
import HangarTestSupport
import Testing

/// `hangar run` as a user runs it: the real binary, real signals.
@Suite("hangar run", .serialized, .timeLimit(.minutes(2)))
struct RunCommandTests {
    let before = HostState.capture()

    func expectHostClean(sourceLocation: SourceLocation = #_sourceLocation) async {
        #expect(await HostState.settled(to: before) == before, sourceLocation: sourceLocation)
    }

    @Test("prints the command's output and exits with its status")
    func exitStatus() async throws {
        let ok = try await HangarProcess.run(["run", "--", "sh", "-c", "echo hello; exit 7"])
        #expect(ok.stdout == "hello\n")
        #expect(ok.status == 7)
        let python = try await HangarProcess.run(["run", "--image", "python", "--", "python3", "-c", "print(1+1)"])
        #expect(python.stdout == "2\n")
        #expect(python.status == 0)
        let killed = try await HangarProcess.run(["run", "--", "sh", "-c", "kill -KILL $$"])
        #expect(killed.status == 128 + SIGKILL)
        await expectHostClean()
    }

    @Test("--env, --workdir, --hostname, --memory and --pids reach the sandbox")
    func options() async throws {
        let result = try await HangarProcess.run([
            "run", "--env", "GREETING=hi there", "--workdir", "/tmp", "--hostname", "box-1", "--memory", "64m",
            "--pids", "32", "--", "sh", "-c", "echo \"$GREETING\"; pwd; hostname",
        ])
        #expect(result.stdout == "hi there\n/tmp\nbox-1\n", "\(result.stderr)")
        #expect(result.status == 0)
        await expectHostClean()
    }

    @Test("bad flags and missing things give a clear error and an exit status", arguments: [
        (["run", "--", "no-such-command"], Int32(127), "command not found in the sandbox: no-such-command"),
        (["run", "--image", "no-such-image", "--", "true"], 125, "no image \"no-such-image\""),
        (["run", "--image", "../etc", "--", "true"], 64, "invalid image name"),
        (["run", "--memory", "12x", "--", "true"], 64, "invalid size \"12x\""),
        (["run", "--hostname", String(repeating: "h", count: 70), "--", "true"], 64, "invalid hostname"),
        (["run", "--env", "NOEQUALS", "--", "true"], 64, "--env expects NAME=VALUE"),
        (["run", "--pids", "0", "--", "true"], 64, "--pids must be at least 1"),
        (["run", "--workdir", "/nope", "--", "true"], 125, "working directory /nope"),
        (["run"], 64, "give the command after --"),
    ])
    func badInput(arguments: [String], status: Int32, message: String) async throws {
        let result = try await HangarProcess.run(arguments)
        #expect(result.status == status, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        await expectHostClean()
    }

    @Test("SIGINT and SIGTERM are passed to the command, and everything is removed", arguments: [SIGINT, SIGTERM])
    func forwardedSignals(signal: Int32) async throws {
        let process = try HangarProcess.start([
            "run", "--memory", "64m", "--", "sh", "-c",
            "trap 'echo caught; exit 9' INT TERM; echo ready; while :; do sleep 0.05; done",
        ])
        try await process.waitForOutput("ready\n")
        kill(process.pid, signal)
        let result = try await process.finish()
        #expect(result.stdout == "ready\ncaught\n")
        #expect(result.status == 9)
        await expectHostClean()
    }

    @Test("a command that ignores SIGTERM is killed at the second signal")
    func secondSignalKills() async throws {
        let process = try HangarProcess.start([
            "run", "--", "sh", "-c", "trap '' INT TERM; echo ready; while :; do sleep 0.05; done",
        ])
        try await process.waitForOutput("ready\n")
        kill(process.pid, SIGTERM)
        try await Task.sleep(for: .milliseconds(200))
        kill(process.pid, SIGTERM)
        let result = try await process.finish()
        #expect(result.status == 128 + SIGKILL)
        await expectHostClean()
    }

    @Test("when hangar itself is killed with SIGKILL, no sandbox process survives")
    func supervisorKilled() async throws {
        let process = try HangarProcess.start(["run", "--", "sh", "-c", "echo ready; (setsid sleep 60 &); sleep 60"])
        try await process.waitForOutput("ready\n")
        try #require(!HostState.processesWithSandboxUIDs().isEmpty)
        kill(process.pid, SIGKILL)
        _ = try await process.finish()
        await expectHostClean()
    }
}
