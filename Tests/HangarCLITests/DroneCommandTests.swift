import Glibc
import HangarSandbox
import HangarTestSupport
import Testing

/// `hangar drone` and its admin API, driven with curl over the unix socket.
@Suite("hangar drone", .serialized, .timeLimit(.minutes(2)))
struct DroneCommandTests {
    let before = HostState.capture()

    func curl(_ socket: String, _ arguments: [String]) async throws -> (code: Int, body: String) {
        let result = try await HangarProcess.run(
            program: "/usr/bin/curl", ["-s", "--unix-socket", socket, "-w", "\n%{http_code}"] + arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test("spawn, list, inspect, logs, metrics and terminate through the admin API; bad requests are refused")
    func adminAPI() async throws {
        let socket = "/tmp/hangar-drone-\(UInt32.random(in: 0...UInt32.max)).sock"
        let drone = try HangarProcess.start(["drone", "--socket", socket, "--log-directory", "none", "--data-root", "none", "--state", ":memory:"])
        try await drone.waitForOutput("admin API on unix:\(socket)")
        let base = "http://drone"

        let body = #"{"key": "doc-1", "image": "busybox", "command": ["sh", "-c", "echo hello from the backend; exec httpd -f -p 127.0.0.1:8080 -h /etc"]}"#
        let spawned = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", body, base + "/backends"])
        #expect(spawned.code == 201, "\(spawned.body)")
        let id = try #require(spawned.body.firstMatch(of: /"id":"(bk-[0-9a-f]+)"/)?.1).description

        var status = ""
        for _ in 0..<100 {
            status = try await curl(socket, [base + "/backends/\(id)"]).body
            if status.contains(#""status":"ready""#) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(status.contains(#""status":"ready""#), "\(status)")
        #expect(try await curl(socket, [base + "/backends"]).body.contains(id))
        #expect(try await curl(socket, [base + "/backends/\(id)/logs"]).body.contains("hello from the backend"))
        let printed = try await HangarProcess.run(["drone", "logs", id, "--socket", socket])
        #expect(printed.status == 0 && printed.stdout == "hello from the backend\n", "\(printed)")

        // --follow prints output as it comes, until the backend ends.
        let chatty = #"{"key": "chatty", "image": "busybox", "command": ["sh", "-c", "echo one; sleep 0.5; echo two"]}"#
        let second = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", chatty, base + "/backends"])
        let chattyID = try #require(second.body.firstMatch(of: /"id":"(bk-[0-9a-f]+)"/)?.1).description
        let followed = try await HangarProcess.run(["drone", "logs", chattyID, "--follow", "--socket", socket])
        #expect(followed.stdout == "one\ntwo\n", "\(followed)")
        let missing = try await HangarProcess.run(["drone", "logs", "bk-0000000000000000", "--socket", socket])
        #expect(missing.status == 1 && missing.stderr.contains("404"), "\(missing)")
        let metrics = try await curl(socket, [base + "/metrics"])
        #expect(metrics.body.contains("hangar_backends{status=\"ready\"} 1"), "\(metrics.body)")

        let bad = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", #"{"key": "x", "image": "../etc"}"#, base + "/backends"])
        #expect(bad.code == 400 && bad.body.contains("image"), "\(bad)")
        #expect(bad.body.contains(#""kind":"bad-request""#) && bad.body.contains(#""id":"err-"#), "errors are {id, kind, message}: \(bad)")
        let notJSON = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", "{", base + "/backends"])
        #expect(notJSON.code == 400)
        for (field, hostile) in [
            ("key", #"{"key": "", "image": "busybox"}"#),
            ("command", #"{"key": "k", "image": "busybox", "command": []}"#),
            ("limits.memory_max", #"{"key": "k", "image": "busybox", "limits": {"memory_max": "12x"}}"#),
            ("max_idle_seconds", #"{"key": "k", "image": "busybox", "max_idle_seconds": -1}"#),
            ("lifetime_limit_seconds", #"{"key": "k", "image": "busybox", "lifetime_limit_seconds": 1e12}"#),
            ("key", #"{"key": "line\nbreak", "image": "busybox"}"#),
            ("command", #"{"key": "k", "image": "busybox", "command": [""]}"#),
            ("A=B", #"{"key": "k", "image": "busybox", "env": {"A=B": "1"}}"#),
            ("env.PORT", #"{"key": "k", "image": "busybox", "env": {"PORT": "1"}}"#),
            ("env.HANGAR_KEY", #"{"key": "k", "image": "busybox", "env": {"HANGAR_KEY": "someone-else"}}"#),
        ] {
            let refused = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", hostile, base + "/backends"])
            #expect(refused.code == 400 && refused.body.contains(field), "\(field): \(refused)")
        }
        let aboveMaximum = try await curl(
            socket, ["-X", "POST", "-H", "content-type: application/json", "-d",
                     #"{"key": "k", "image": "busybox", "limits": {"memory_max": "64g"}}"#, base + "/backends"])
        #expect(aboveMaximum.code == 422 && aboveMaximum.body.contains("above the policy's maximum"), "\(aboveMaximum)")
        #expect(aboveMaximum.body.contains(#""kind":"refused""#), "\(aboveMaximum)")
        #expect(try await curl(socket, [base + "/backends/not-an-id"]).code == 400)
        #expect(try await curl(socket, [base + "/backends/bk-0000000000000000"]).code == 404)

        let terminated = try await curl(socket, ["-X", "POST", base + "/backends/\(id)/terminate"])
        #expect(terminated.code == 202)
        for _ in 0..<100 {
            status = try await curl(socket, [base + "/backends/\(id)"]).body
            if status.contains(#""status":"terminated""#) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(status.contains(#""reason":"external""#), "\(status)")

        kill(drone.pid, SIGTERM)
        let end = try await drone.finish()
        #expect(end.status == 0, "\(end.stderr)")
        unlink(socket)
        await expectHostRestored(before)
    }

    @Test("a drone killed with SIGKILL and restarted records its backends as lost and leaves nothing behind")
    func restartAfterKill() async throws {
        let socket = "/tmp/hangar-drone-\(UInt32.random(in: 0...UInt32.max)).sock"
        let state = "/tmp/hangar-drone-\(UInt32.random(in: 0...UInt32.max)).sqlite"
        defer {
            for suffix in ["", "-wal", "-shm"] { unlink(state + suffix) }
            unlink(socket)
        }
        let arguments = ["drone", "--socket", socket, "--log-directory", "none", "--data-root", "none", "--state", state]
        let first = try HangarProcess.start(arguments)
        try await first.waitForOutput("admin API on unix:\(socket)")
        let body = #"{"key": "doc-1", "image": "busybox", "command": ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/etc"]}"#
        let spawned = try await curl(socket, ["-X", "POST", "-H", "content-type: application/json", "-d", body, "http://drone/backends"])
        let id = try #require(spawned.body.firstMatch(of: /"id":"(bk-[0-9a-f]+)"/)?.1).description
        for _ in 0..<100 where !(try await curl(socket, ["http://drone/backends/\(id)"]).body.contains(#""status":"ready""#)) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!HostState.processesWithSandboxUIDs().isEmpty, "the backend runs")
        kill(first.pid, SIGKILL)
        _ = try await first.finish()

        let second = try HangarProcess.start(arguments)
        try await second.waitForOutput("admin API on unix:\(socket)")
        let recovered = try await curl(socket, ["http://drone/backends/\(id)"])
        #expect(recovered.body.contains(#""status":"terminated""#) && recovered.body.contains(#""reason":"lost""#), "\(recovered.body)")
        let events = try await curl(socket, ["http://drone/events"]).body
        #expect(events.contains(#""reason":"lost""#), "\(events)")
        // Acknowledged events are not listed again.
        let last = try #require(events.matches(of: /"id":(\d+)/).last?.1).description
        let acked = try await curl(
            socket, ["-X", "POST", "-H", "content-type: application/json", "-d", #"{"through": "# + last + "}", "http://drone/events/ack"])
        #expect(acked.code == 204, "\(acked)")
        for hostile in [#"{"through": "all"}"#, "{", #"{"upTo": 3}"#] {
            let refused = try await curl(
                socket, ["-X", "POST", "-H", "content-type: application/json", "-d", hostile, "http://drone/events/ack"])
            #expect(refused.code == 400 && refused.body.contains("not an acknowledgement"), "\(hostile): \(refused)")
        }
        #expect(try await curl(socket, ["http://drone/events"]).body == #"{"events":[]}"#)
        kill(second.pid, SIGTERM)
        let end = try await second.finish()
        #expect(end.stderr.contains("notice hangar.drone: backends of the previous run recorded as lost backends.count=1"), "\(end.stderr)")
        await expectHostRestored(before, "no sandbox, mount, cgroup or network namespace is left")
    }
}
