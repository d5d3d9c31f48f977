import Glibc
import HangarSandbox
import HangarTestSupport
import Testing

/// `hangar run` as a user runs it: the real binary, real signals.
@Suite("hangar run", .serialized, .timeLimit(.minutes(2)))
struct RunCommandTests {
    let before = HostState.capture()

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
        await expectHostRestored(before)
    }

    @Test("--env, --workdir, --hostname, --memory and --pids reach the sandbox")
    func options() async throws {
        let result = try await HangarProcess.run([
            "run", "--env", "GREETING=hi there", "--workdir", "/tmp", "--hostname", "box-1", "--memory", "64m",
            "--pids", "32", "--", "sh", "-c", "echo \"$GREETING\"; pwd; hostname",
        ])
        #expect(result.stdout == "hi there\n/tmp\nbox-1\n", "\(result.stderr)")
        #expect(result.status == 0)
        await expectHostRestored(before)
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
        (["run", "--image-path", "/tmp"], 64, "give the command after --"),
        (["run", "--memory", "4g", "--", "true"], 65, "4g is above the policy's maximum 2g (limits.max.memory_max in policies/default.toml)"),
        (["run", "--policy", "no/such.toml", "--", "true"], 65, "no/such.toml: cannot open"),
        (["run", "--memory", "1k", "--", "true"], 65, "limits.memory_max: 1k is below the smallest value, 4m"),
        (["policy", "check", "no/such.toml"], 65, "no/such.toml: cannot open"),
        (["policy", "show", "../etc"], 64, "invalid image name"),
        (["run", "--image-path", "/etc/passwd", "--", "true"], 125, "is not a directory"),
        (["run", "--image-path", "no/such/dir", "--", "true"], 125, "not found at"),
        (["run", "--upper-size", "lots", "--", "true"], 64, "invalid size \"lots\""),
        (["run", "--upper-size", "4k", "--", "true"], 65, "limits.upper_size: 4k is below the smallest value, 1m"),
        (["bench", "spawn", "--runs", "0"], 64, "--runs must be 1...1000000"),
        (["bench", "spawn", "--warmup=-1"], 64, "--warmup must not be negative"),
        (["bench", "spawn", "--netns-pool=-1"], 64, "--netns-pool must be 0...1024"),
        (["bench", "spawn", "--only", "hangar,docker"], 64, "unknown contender docker"),
        (["bench", "spawn", "--image", "../x"], 64, "invalid image name"),
        (["doctor", "--attack", "--only", "teleport"], 64, "unknown attack teleport"),
        (["bench", "spawn", "--memory", "12x"], 64, "invalid size \"12x\""),
        (["bench", "coldstart", "--runs", "0"], 64, "--runs must be 1...100000"),
        (["bench", "idle", "--backends", "0"], 64, "--backends must be 1...5000"),
        (["bench", "burst", "--backends", "0"], 64, "--backends must be 1...2000"),
        (["bench", "burst", "--rounds", "1000"], 64, "--rounds must be 1...100"),
        (["bench", "connect", "--seconds", "0"], 64, "--seconds must be 1...3600"),
        (["bench", "connect", "--connections", "0"], 64, "--connections must be 1...10000"),
        (["bench", "connect", "--connections", "4", "--threads", "8"], 64, "--threads must be 1...--connections (4)"),
        (["bench", "connect", "--keys", "0"], 64, "--keys must be 1...1000000"),
        (["bench", "proxy", "--stream-gib", "0"], 64, "--stream-gib must be 1...64"),
        (["bench", "proxy", "--only", "nginx"], 64, "--only: direct, hangar and/or haproxy"),
        (["bench", "proxy", "--only", "hangar,hangar"], 64, "--only: direct, hangar and/or haproxy, each once"),
        (["bench", "proxy", "--websocket-mib", "0"], 64, "--websocket-mib must be 1...4096"),
        (["bench", "proxy", "--round-trips", "5"], 64, "--round-trips must be 100...10000000"),
        (["proxy"], 64, "the proxy needs HANGAR_INGRESS_SECRET"),
        (["proxy", "--controller", "ftp://x"], 64, "--controller takes an http:// or https:// URL"),
        (["proxy", "--cluster", "a b"], 64, "--cluster: not a cluster name"),
        (["proxy", "--listen", "nowhere"], 64, "--listen takes host:port"),
        (["proxy", "--loops", "0"], 64, "--loops: from 1 to 64"),
        (["proxy", "--ready-timeout", "0"], 64, "--ready-timeout: from 1 to 3600 seconds"),
        (["proxy", "--head-timeout", "99999"], 64, "--head-timeout: from 1 to 3600 seconds"),
        (["proxy", "--scheme", "ftp"], 64, "scheme: http or https, got ftp"),
        (["proxy", "--listen", "localhost:9090"], 64, "address: an IPv4 address to listen on"),
        (["proxy", "--root-redirect", "javascript:alert(1)"], 64, "root redirect: an http(s) URL"),
        (["proxy", "--root-redirect", "https://a.example/ x"], 64, "root redirect: an http(s) URL"),
        (["dev", "--max-backends", "0"], 64, "--max-backends must be at least 1"),
        (["bench", "proxy", "--websockets", "0"], 64, "--websockets must be 1...1024"),
        (["bench", "proxy", "--loops", "65"], 64, "--loops must be 1...64"),
        (["ws", "ws://127.0.0.1:1/x"], 1, "hangar ws:"),
        (["dev", "--api", "127.0.0.1:0"], 64, "--api needs a fixed port"),
        (["dev", "--proxy", "localhost"], 64, "--proxy takes host:port"),
        (["dev", "--proxy", "localhost:9090"], 64, "--proxy: an IPv4 address and port to listen on"),
        (["ws", "ftp://x"], 64, "the URL must start with ws://, wss://, http:// or https://"),
        (["drone", "--data-root", "data"], 64, "--data-root must be an absolute path or none"),
        (["drone", "--data-root", "/proc/no/such", "--state", ":memory:", "--socket", "/tmp/hangar-never.sock"], 1,
         "the data root /proc/no/such"),
        (["drone", "--max-backends", "0"], 64, "--max-backends must be at least 1"),
        (["drone", "--memory-budget", "lots", "--state", ":memory:"], 64, "invalid size \"lots\""),
        (["drone", "--ingress-port", "0"], 64, "needs HANGAR_INGRESS_SECRET"),
        (["drone", "--state", "/proc/no/such/drone.sqlite", "--socket", "/tmp/hangar-never.sock"], 1, "the drone's state in /proc/no/such/drone.sqlite"),
        (["drone", "logs", "nope"], 64, "a backend id looks like bk-"),
        (["drone", "logs", "bk-0000000000000000", "--socket", "/tmp/hangar-no-such.sock"], 1, "no drone at /tmp/hangar-no-such.sock"),
        (["doctor", "--attack", "--weaken", "everything"], 64, "everything"),
        (["controller", "--log-format", "xml"], 64, "--log-format: \"xml\" is not one of text, json"),
        (["drone", "--log-level", "loud"], 64, "--log-level: \"loud\" is not one of trace, debug, info"),
        (["proxy", "--metrics", "anywhere"], 64, "--metrics takes host:port"),
        (["drone", "--metrics", "9100"], 64, "--metrics takes host:port"),
        (["cluster", "--count", "2"], 64, "--count goes with --watch"),
        (["cluster", "--watch", "0"], 64, "--watch: from 0.1 to 3600 seconds"),
        (["cluster", "--watch", "1", "--count", "0"], 64, "--count must be at least 1"),
    ])
    func badInput(arguments: [String], status: Int32, message: String) async throws {
        let result = try await HangarProcess.run(arguments)
        #expect(result.status == status, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        await expectHostRestored(before)
    }

    @Test("hangar doctor checks the host, and --attack prints the table; --weaken names what gets through")
    func doctor() async throws {
        let checks = try await HangarProcess.run(["doctor"])
        #expect(checks.status == 0, "\(checks.stdout)\(checks.stderr)")
        #expect(checks.stdout.contains("sandbox          ok"), "\(checks.stdout)")
        let attacks = try await HangarProcess.run(["doctor", "--attack", "--only", "mount,raw-socket,userns-clone"])
        #expect(attacks.status == 0)
        #expect(attacks.stdout.contains("3 of 3 attacks contained"), "\(attacks.stdout)")
        let weakened = try await HangarProcess.run([
            "doctor", "--attack", "--only", "mount,userns-clone", "--weaken", "argument-guard",
        ])
        #expect(weakened.status == 1)
        #expect(weakened.stdout.contains("1 of 2 attacks contained; NOT CONTAINED: userns-clone"), "\(weakened.stdout)")
        await expectHostRestored(before)
    }

    @Test("a wrong HANGAR_CGROUP is refused, naming it")
    func badCgroupDriver() async throws {
        setenv("HANGAR_CGROUP", "v3", 1)
        defer { unsetenv("HANGAR_CGROUP") }
        let result = try await HangarProcess.run(["run", "--", "true"])
        #expect(result.status == 125)
        #expect(result.stderr.contains("HANGAR_CGROUP: expected auto, v1, v2 or none, got \"v3\""), "\(result.stderr)")
        await expectHostRestored(before)
    }

    @Test("--image-path takes a relative directory; --read-only refuses writes")
    func imagePathAndReadOnly() async throws {
        let image = try TestSandbox.image("busybox")
        let relative = try #require(image.root.components(afterPrefix: currentDirectory() + "/"))
        let ran = try await HangarProcess.run(["run", "--image-path", relative, "--", "echo", "from path"])
        #expect(ran.stdout == "from path\n", "\(ran.stderr)")
        let readOnly = try await HangarProcess.run([
            "run", "--read-only", "--", "sh", "-c", "echo x > /etc/new || echo refused; echo y > /tmp/new || echo refused",
        ])
        #expect(readOnly.stdout == "refused\nrefused\n")
        #expect(readOnly.stderr.contains("Read-only file system"))
        await expectHostRestored(before)
    }

    @Test("hangar bench spawn prints a table and JSON for the contenders asked for")
    func benchSpawn() async throws {
        let result = try await HangarProcess.run([
            "bench", "spawn", "--runs", "3", "--warmup", "0", "--only", "hangar,posix_spawn", "--netns-pool", "0",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("hangar ") })
        #expect(lines.contains { $0.hasPrefix("posix_spawn (floor) ") })
        #expect(!lines.contains { $0.hasPrefix("bwrap") })
        #expect(lines.last?.hasPrefix("{\"benchmark\": \"spawn\", \"runs\": 3, \"results\": [") == true)
        await expectHostRestored(before)
    }

    @Test("hangar bench proxy prints a table and JSON for direct, hangar and haproxy")
    func benchProxy() async throws {
        let result = try await HangarProcess.run([
            "bench", "proxy", "--stream-gib", "1", "--websockets", "4", "--websocket-mib", "8", "--round-trips", "200",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        for path in ["direct ", "hangar ", "haproxy "] { #expect(lines.contains { $0.hasPrefix(path) }, "\(result.stdout)") }
        #expect(lines.last?.hasPrefix("{\"benchmark\": \"proxy\", \"results\": [{\"name\": \"direct\"") == true)
        #expect(lines.last?.contains("\"stream_cpu_s_per_gib\"") == true)
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
        await expectHostRestored(before)
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
        await expectHostRestored(before)
    }

    @Test("when hangar itself is killed with SIGKILL, no sandbox process survives")
    func supervisorKilled() async throws {
        let process = try HangarProcess.start(["run", "--", "sh", "-c", "echo ready; (setsid sleep 60 &); sleep 60"])
        try await process.waitForOutput("ready\n")
        try #require(!HostState.processesWithSandboxUIDs().isEmpty)
        kill(process.pid, SIGKILL)
        _ = try await process.finish()
        // Its empty cgroups stay until the next runtime starts and sweeps what runtimes
        // that are gone left behind.
        let next = try await HangarProcess.run(["run", "--", "true"])
        #expect(next.status == 0, "\(next.stderr)")
        await expectHostRestored(before)
    }
}

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return "/" }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension String {
    func components(afterPrefix prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}
