import FoundationEssentials
import Glibc
import HangarClient
import HangarCore
import HangarTestSupport
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// The controller end to end: `hangar controller` and two `hangar drone`s as processes, real
/// sandboxes, the API through HangarClient and curl, the drone and proxy sockets over
/// WebSocket.
@Suite("hangar controller", .serialized, .timeLimit(.minutes(5)))
struct ControllerTests {
    @Test("one backend per key: 500 concurrent connects give one; reuse is spawned false; 1,000 keys spread over both drones")
    func oneBackendPerKey() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        let responses = try await withThrowingTaskGroup(of: ConnectResponse.self) { group in
            for _ in 0..<500 { group.addTask { try await client.connect(try cluster.request("doc-1")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(responses.map(\.backend_id)).count == 1, "one backend for the key")
        #expect(responses.filter(\.spawned).count == 1, "exactly one connect spawned it")
        #expect(Set(responses.map(\.token)).count == 500, "a token per connect")
        let backend = try BackendID(responses[0].backend_id)
        #expect(try await client.waitUntilReady(backend).status == "ready")
        let again = try await client.connect(try cluster.request("doc-1"))
        #expect(again.backend_id == backend.rawValue && !again.spawned && again.status == "ready")
        #expect(again.url == "http://\(TestCluster.cluster)/\(again.token)/")
        #expect(again.status_url == "\(cluster.url)/pub/b/\(backend)/status")

        let spread = try await withThrowingTaskGroup(of: ConnectResponse.self) { group in
            for index in 0..<1000 { group.addTask { try await client.connect(try cluster.request("key-\(index)")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(spread.allSatisfy(\.spawned) && Set(spread.map(\.backend_id)).count == 1000)
        let perDrone = Dictionary(grouping: spread, by: \.drone).mapValues(\.count)
        #expect(perDrone.count == 2, "both drones got backends: \(perDrone)")
        #expect(perDrone.values.allSatisfy { $0 > 300 }, "best of two keeps them near even: \(perDrone)")
        let counts = Mutex<[String: Int]>([:])
        try await eventually("1,001 backends ready (\(counts.withLock { $0 }))", timeout: .seconds(120)) {
            let now = try await client.clusterState(TestCluster.cluster).backends
            counts.withLock { $0 = now }
            return now["ready"] == 1001
        }
        let state = try await client.clusterState(TestCluster.cluster)
        #expect(state.drones.map(\.backends).reduce(0, +) == 1001)
        for name in cluster.droneNames {
            let listed = try await cluster.backends(on: name)
            #expect(listed.count == perDrone[name, default: 0] + (responses[0].drone == name ? 1 : 0))
        }
        let table = try await HangarProcess.run(
            ["cluster", "--controller", cluster.url, TestCluster.cluster.rawValue],
            environment: ["HANGAR_CONTROLLER_TOKEN": cluster.token])
        #expect(table.status == 0 && table.stdout.contains("dr-one") && table.stdout.contains("1001 ready"), "\(table)")
        try await cluster.stop()
    }

    @Test("a tag mismatch is KeyHeld; no spawn config is KeyUnheldNoSpawnConfig; a connect while terminating waits for a new backend")
    func keysAndTags() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        let first = try await client.connect(try cluster.request("doc-tag", tag: "v1"))
        await #expect { try await client.connect(try cluster.request("doc-tag", tag: "v2")) } throws: { error in
            (error as? HangarClient.Failure)?.kind == "KeyHeld"
        }
        await #expect { try await client.connect(try cluster.request("nobody", spawn: false)) } throws: { error in
            guard case .api(let status, let body) = error as? HangarClient.Failure else { return false }
            return status == 409 && body.kind == "KeyUnheldNoSpawnConfig" && body.id.hasPrefix("err-")
        }
        let id = try BackendID(first.backend_id)
        _ = try await client.waitUntilReady(id)
        // A soft terminate: the next connect never gets the dying backend.
        let terminating = try await client.terminate(id)
        #expect(terminating.status == "terminating")
        let next = try await client.connect(try cluster.request("doc-tag", tag: "v1"))
        #expect(next.backend_id != first.backend_id && next.spawned, "a new backend once the old one ended")
        let ended = try await client.status(id)
        #expect(ended.status == "terminated" && ended.reason == "external", "\(ended)")
        // Hard terminate.
        let nextID = try BackendID(next.backend_id)
        _ = try await client.waitUntilReady(nextID)
        _ = try await client.terminate(nextID, hard: true)
        try await eventually("killed") { try await client.status(nextID).status == "terminated" }
        let killed = try await client.status(nextID)
        #expect(killed.exit_code == nil && killed.reason == "external", "killed by a signal: \(killed)")
        try await cluster.stop()
    }

    @Test("the status stream replays every event and then follows live; Last-Event-ID resumes")
    func statusStream() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        let response = try await client.connect(try cluster.request("doc-stream"))
        let id = try BackendID(response.backend_id)
        let seen = Mutex<[(Int64, String)]>([])
        let follower = Task {
            for try await (eventID, status) in client.statusStream(id) { seen.withLock { $0.append((eventID, status.status)) } }
        }
        _ = try await client.waitUntilReady(id)
        try await eventually("the follower saw ready") { seen.withLock { $0.map(\.1) }.contains("ready") }
        _ = try await client.terminate(id)
        try await follower.value  // ends with terminated
        let statuses = seen.withLock { $0.map(\.1) }
        #expect(statuses == ["scheduled", "loading", "starting", "waiting", "ready", "terminating", "terminated"], "\(statuses)")
        // Replayed after the fact: the same events, the same ids.
        var replayed: [(Int64, String)] = []
        for try await (eventID, status) in client.statusStream(id) { replayed.append((eventID, status.status)) }
        #expect(replayed.map(\.0) == seen.withLock { $0.map(\.0) })
        // Resumed after the fourth.
        let fourth = replayed[3].0
        var resumed: [String] = []
        for try await (_, status) in client.statusStream(id, lastEventID: fourth) { resumed.append(status.status) }
        #expect(resumed == ["ready", "terminating", "terminated"])
        let printed = try await HangarProcess.run(["status", id.rawValue, "--controller", cluster.url])
        #expect(printed.stdout == "terminated (external) exit code 143\n", "\(printed)")
        try await cluster.stop()
    }

    @Test("drain stops placements on a drone and undrain resumes them")
    func drainAndUndrain() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-one"))
        for index in 0..<20 {
            #expect(try await client.connect(try cluster.request("drained-\(index)")).drone == "dr-two")
        }
        let drained = try await HangarProcess.run(
            ["drain", "dr-two", "--controller", cluster.url, "--cluster", TestCluster.cluster.rawValue],
            environment: ["HANGAR_CONTROLLER_TOKEN": cluster.token])
        #expect(drained.status == 0, "\(drained)")
        await #expect { try await client.connect(try cluster.request("nowhere")) } throws: { error in
            guard case .api(let status, let body) = error as? HangarClient.Failure else { return false }
            return status == 503 && body.kind == "NoDroneAvailable"
        }
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-one"), false)
        #expect(try await client.connect(try cluster.request("undrained")).drone == "dr-one")
        await #expect { try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-nobody")) } throws: {
            ($0 as? HangarClient.Failure)?.kind == "NotFound"
        }
        try await cluster.stop()
    }

    @Test("revoke refuses a token, or a user's grant, and tells the proxies on the proxy socket")
    func revoke() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        let first = try await client.connect(try cluster.request("doc-revoke"))
        let second = try await client.connect(try cluster.request("doc-revoke"))
        let heard = Mutex<[ProxyMessage]>([])
        let proxy = Task {
            try await cluster.webSocket("proxy-socket") { inbound, outbound, _ in
                try await outbound.write(.text(String(decoding: try JSONEncoder().encode(ProxyMessage.routeRequest(token: first.token)), as: UTF8.self)))
                for try await message in inbound.messages(maxSize: 1 << 16) {
                    guard case .text(let text) = message else { continue }
                    let decoded = try JSONDecoder().decode(ProxyMessage.self, from: Data(text.utf8))
                    heard.withLock { $0.append(decoded) }
                    if case .revoked = decoded {
                        try await outbound.write(.text(String(decoding: try JSONEncoder().encode(ProxyMessage.routeRequest(token: first.token)), as: UTF8.self)))
                    }
                    if heard.withLock({ $0.count }) == 3 { try await outbound.close(.normalClosure, reason: nil) }
                }
            }
        }
        try await eventually("the proxy got its route") { heard.withLock { $0.count } >= 1 }
        guard case .route(let token, let route) = heard.withLock({ $0[0] }) else {
            Issue.record("no route: \(heard.withLock { $0 })")
            return
        }
        #expect(token == first.token && route?.backend_id == first.backend_id && route?.user == "ada")
        #expect(route?.secret_token == first.secret_token && first.secret_token != second.secret_token)
        #expect(route.map { $0.expires_at! > wallClockMilliseconds() } == true)
        #expect(first.token != second.token, "a token per connect, of one grant")
        let revoked = try await client.revoke(RevokeRequest(backend_id: try BackendID(first.backend_id), token: first.token))
        #expect(revoked.revoked == 1)
        try await eventually("the proxy heard of the revocation and asked again") { heard.withLock { $0.count } == 3 }
        let messages = heard.withLock { $0 }
        #expect(messages[1] == .revoked(Revocation(tokens: [first.token])))
        #expect(messages[2] == .route(token: first.token, route: nil), "a revoked token leads nowhere")
        _ = try await proxy.value
        let again = try await client.revoke(RevokeRequest(backend_id: try BackendID(first.backend_id), token: first.token))
        #expect(again.revoked == 0, "once")
        let forged = String(first.token.dropLast()) + (first.token.last == "A" ? "B" : "A")
        #expect(try await client.revoke(RevokeRequest(backend_id: try BackendID(first.backend_id), token: forged)).revoked == 0)
        let other = try await client.connect(try cluster.request("doc-revoke-other"))
        #expect(
            try await client.revoke(RevokeRequest(backend_id: try BackendID(other.backend_id), token: second.token)).revoked == 0,
            "another backend's token is not this one's to revoke")
        // Hostile route requests get "no route", one by one, and the session stays up.
        let hostile = ["", "not a token", String(repeating: "A", count: 10_000), "s." + String(repeating: "x", count: 70), forged]
        let answers = Mutex<[ProxyMessage]>([])
        try await cluster.webSocket("proxy-socket") { inbound, outbound, _ in
            try await outbound.write(.text("garbage, not JSON"))
            for token in hostile + [second.token] {
                try await outbound.write(.text(String(decoding: try JSONEncoder().encode(ProxyMessage.routeRequest(token: token)), as: UTF8.self)))
            }
            for try await message in inbound.messages(maxSize: 1 << 16) {
                guard case .text(let text) = message else { continue }
                let decoded = try JSONDecoder().decode(ProxyMessage.self, from: Data(text.utf8))
                if answers.withLock({ $0.append(decoded); return $0.count }) == hostile.count + 1 {
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
        }
        let got = answers.withLock { $0 }
        #expect(got.prefix(hostile.count).allSatisfy { if case .route(_, nil) = $0 { true } else { false } }, "\(got)")
        guard case .route(second.token, let route)? = got.last else {
            Issue.record("no answer for a valid token after the hostile ones: \(got)")
            return
        }
        #expect(route?.backend_id == second.backend_id, "a valid token still routes")
        let rest = try await client.revoke(RevokeRequest(backend_id: try BackendID(second.backend_id), user: "ada"))
        #expect(rest.revoked == 1, "the user's grant, with every token of it")
        // A connect after that makes a new grant: its token leads to the backend again.
        let third = try await client.connect(try cluster.request("doc-revoke"))
        #expect(third.backend_id == first.backend_id && !third.spawned)
        try await cluster.stop()
    }

    @Test("bad input gets a 4xx naming the problem: malformed JSON, unknown fields, invalid names and ids, oversized bodies, no token")
    func badInput() async throws {
        let cluster = try await TestCluster(drones: ["dr-one"])
        func post(_ path: String, _ body: String, token: Bool = true) async throws -> (Int, String) {
            var arguments = ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "content-type: application/json"]
            if token { arguments += ["-H", "Authorization: Bearer \(cluster.token)"] }
            arguments += ["--data-binary", body, cluster.url + path]
            let result = try await HangarProcess.run(program: "/usr/bin/curl", arguments)
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }
        let busybox = #"{"image": "busybox"}"#
        let cases: [(String, String, Int, String)] = [
            ("/ctrl/connect", "{", 400, "not valid JSON"),
            ("/ctrl/connect", "[]", 400, "the body"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "max_idle_secs": 3}}"#, 400, "spawn_config.max_idle_secs: unknown field"),
            ("/ctrl/connect", #"{"key": {"name": "k", "colour": "red"}}"#, 400, "key.colour: unknown field"),
            ("/ctrl/connect", #"{"key": {"name": ""}}"#, 400, "key.name"),
            ("/ctrl/connect", #"{"key": {"name": "k", "namespace": "Bad Space"}}"#, 400, "key.namespace"),
            ("/ctrl/connect", #"{"key": {"name": 7}}"#, 400, "key.name: expected a string"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "../etc"}}}"#, 400, "spawn_config.executable.image"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "id": "bk-nope"}}"#, 400, "spawn_config.id"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "cluster": "UPPER"}}"#, 400, "spawn_config.cluster"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "max_idle_seconds": -1}}"#, 400, "spawn_config.max_idle_seconds"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "env": {"PORT": "1"}}}}"#, 400, "spawn_config.executable.env"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "limits": {"memory_max": "lots"}}}}"#, 400, "spawn_config.executable.limits.memory_max"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "subdomain": "-x-"}}"#, 400, "spawn_config.subdomain"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox)}, "user": 3}"#, 400, "user: expected a string"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {}}"#, 400, "spawn_config.executable: required"),
            ("/ctrl/connect", #"{"key": {"name": "k", "tag": "a\u0001b"}}"#, 400, "key.tag"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "user": "\#(String(repeating: "u", count: 300))"}"#, 400, "user"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "auth": [1]}"#, 400, "auth"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "pool": "Pool!"}}"#, 400, "spawn_config.pool"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "lifetime_limit_seconds": 0}}"#, 400, "spawn_config.lifetime_limit_seconds"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": \#(busybox), "use_static_token": "yes"}}"#, 400, "spawn_config.use_static_token"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "command": []}}}"#, 400, "spawn_config.executable.command"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "env": {"A=B": "1"}}}}"#, 400, "spawn_config.executable.env"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "limits": {"pids_max": 0}}}}"#, 400, "limits.pids_max"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "limits": {"cpu": 0}}}}"#, 400, "limits.cpu"),
            ("/ctrl/connect", #"{"key": {"name": "k"}, "spawn_config": {"executable": {"image": "busybox", "limits": {"memory_max": "2p"}}}}"#, 400, "limits.memory_max"),
            ("/ctrl/b/revoke", #"{"backend_id": "bk-0000000000000000"}"#, 404, "no backend"),
            ("/ctrl/b/revoke", #"{"backend_id": "bk-0000000000000000", "everything": true}"#, 400, "everything: unknown field"),
            ("/ctrl/b/bk-zz/hard-terminate", "", 400, "backend in the path"),
            ("/ctrl/c/\(TestCluster.cluster)/d/DR/undrain", "", 400, "drone in the path"),
            ("/ctrl/b/revoke", #"{"backend_id": "nope"}"#, 400, "backend_id"),
            ("/ctrl/b/bk-zz/soft-terminate", "", 400, "backend in the path"),
            ("/ctrl/c/BAD/d/dr-one/drain", "", 400, "cluster in the path"),
            ("/ctrl/b/bk-0000000000000000/soft-terminate", "", 404, "no backend"),
            ("/ctrl/connect", #"{"key": {"name": "\#(String(repeating: "x", count: 70_000))"}}"#, 413, "over 65536 bytes"),
        ]
        for (path, body, status, needle) in cases {
            let (code, answer) = try await post(path, body)
            #expect(code == status && answer.contains(needle), "\(path) \(body.prefix(120)): \(code) \(answer)")
            #expect(answer.contains(#""kind":"#) && answer.contains(#""id":"err-"#), "errors are {id, kind, message}: \(answer)")
        }
        let (code, answer) = try await post("/ctrl/connect", "{}", token: false)
        #expect(code == 401 && answer.contains("Bearer"), "\(answer)")
        let wrong = try await HangarProcess.run(program: "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer wrong-token-wrong-token", cluster.url + "/ctrl/status"])
        #expect(wrong.stdout == "401")
        // /pub needs no token; an unknown backend is a 404.
        let missing = try await HangarProcess.run(program: "/usr/bin/curl", ["-s", "-w", "\n%{http_code}", cluster.url + "/pub/b/bk-0000000000000000/status"])
        #expect(missing.stdout.hasSuffix("\n404") && missing.stdout.contains("NotFound"), "\(missing)")
        for (path, needle) in [("/ctrl/c/BAD/state", "cluster in the path"), ("/pub/b/not-an-id/status", "backend in the path")] {
            let got = try await HangarProcess.run(
                program: "/usr/bin/curl",
                ["-s", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(cluster.token)", cluster.url + path])
            #expect(got.stdout.hasSuffix("\n400") && got.stdout.contains(needle), "\(path): \(got.stdout)")
        }
        let garbled = try await HangarProcess.run(
            program: "/usr/bin/curl",
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Last-Event-ID: nonsense", cluster.url + "/pub/b/bk-0000000000000000/status-stream"])
        #expect(garbled.stdout == "404", "a Last-Event-ID that is no number counts as none")
        let health = try await HangarProcess.run(program: "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", cluster.url + "/pub/health"])
        #expect(health.stdout == "200")
        let metrics = try await HangarProcess.run(program: "/usr/bin/curl", ["-s", cluster.url + "/metrics"])
        #expect(metrics.stdout.contains("hangar_controller_drones_connected 1"), "\(metrics.stdout)")
        try await cluster.stop()
    }

    @Test("a drone killed with SIGKILL: it leaves scheduling, its backends are recorded lost and its keys free after the lease")
    func droneKilled() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-two"))
        let doomed = try await client.connect(try cluster.request("doc-lost"))
        #expect(doomed.drone == "dr-one")
        let id = try BackendID(doomed.backend_id)
        _ = try await client.waitUntilReady(id)
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-two"), false)
        cluster.drone("dr-one").signal(SIGKILL)
        _ = try await cluster.drone("dr-one").finish()
        // Until the lease runs out the key is still held: never two backends for one key.
        let during = try await client.connect(try cluster.request("doc-lost"))
        #expect(during.backend_id == doomed.backend_id && !during.spawned)
        try await eventually("the backend recorded lost", timeout: .seconds(20)) {
            try await client.status(id).status == "terminated"
        }
        #expect(try await client.status(id).reason == "lost")
        let after = try await client.connect(try cluster.request("doc-lost"))
        #expect(after.spawned && after.drone == "dr-two", "the key is free; the dead drone gets nothing")
        let state = try await client.clusterState(TestCluster.cluster)
        #expect(state.drones.first { $0.name == "dr-one" }.map { !$0.connected && $0.draining } == true)
        // The drone comes back: it records its previous backends as lost and reconnects.
        try cluster.startDrone("dr-one")
        try await cluster.waitUntilConnected(["dr-one"])
        #expect(try await cluster.backends(on: "dr-one").isEmpty)
        try await cluster.stop()
    }

    @Test("the controller killed with SIGKILL and restarted: nothing lost, drones reconnect, un-acked actions and events take effect once")
    func controllerKilled() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        let running = try await client.connect(try cluster.request("doc-old"))
        let runningID = try BackendID(running.backend_id)
        _ = try await client.waitUntilReady(runningID)
        // The drones stop reading: what the controller sends now is not acknowledged.
        for name in cluster.droneNames { cluster.drone(name).signal(SIGSTOP) }
        let fresh = try await client.connect(try cluster.request("doc-new"))
        _ = try await client.terminate(runningID)
        try await cluster.killController()
        for name in cluster.droneNames { cluster.drone(name).signal(SIGCONT) }
        // The drones act on what they had read, and record events nobody acknowledges.
        try await Task.sleep(for: .milliseconds(500))
        try await cluster.restartController()
        try await cluster.waitUntilConnected(cluster.droneNames)
        let freshID = try BackendID(fresh.backend_id)
        _ = try await client.waitUntilReady(freshID)
        try await eventually("the terminate took effect") { try await client.status(runningID).status == "terminated" }
        let copies = try await cluster.backends(on: fresh.drone).filter { $0.id == fresh.backend_id }
        #expect(copies.count == 1, "the spawn, sent twice, ran once")
        #expect(try await cluster.backends(on: fresh.drone).filter { $0.key == "doc-new" }.count == 1)
        // The store kept everything: keys, tokens' backends, events in order.
        let again = try await client.connect(try cluster.request("doc-new"))
        #expect(again.backend_id == fresh.backend_id && !again.spawned)
        var statuses: [String] = []
        for try await (_, status) in client.statusStream(runningID) { statuses.append(status.status) }
        #expect(statuses == ["scheduled", "loading", "starting", "waiting", "ready", "terminating", "terminated"], "each once: \(statuses)")
        try await cluster.stop()
    }

    @Test("forward auth: /ctrl asks another service, which sees the request's Authorization; /pub stays open")
    func forwardAuth() async throws {
        // The service that decides is a second controller: its /ctrl/status answers 200 only
        // to its own bearer token.
        let secret = "fa-" + randomHex16() + randomHex16()
        let judge = try HangarProcess.start(
            ["controller", "--listen", "127.0.0.1:0", "--store", ":memory:", "--policies", "none"],
            environment: ["HANGAR_CONTROLLER_TOKEN": secret])
        try await judge.waitForOutput("listening on")
        let judgePort = try #require(judge.output.firstMatch(of: /127\.0\.0\.1:(\d+)/)?.1)
        let guarded = try HangarProcess.start([
            "controller", "--listen", "127.0.0.1:0", "--store", ":memory:", "--policies", "none", "--forward-auth",
            "http://127.0.0.1:\(judgePort)/ctrl/status",
        ])
        try await guarded.waitForOutput("listening on")
        let port = try #require(guarded.output.firstMatch(of: /127\.0\.0\.1:(\d+)/)?.1)
        func status(_ path: String, bearer: String?) async throws -> String {
            var arguments = ["-s", "-o", "/dev/null", "-w", "%{http_code}"]
            if let bearer { arguments += ["-H", "Authorization: Bearer \(bearer)"] }
            return try await HangarProcess.run(program: "/usr/bin/curl", arguments + ["http://127.0.0.1:\(port)\(path)"]).stdout
        }
        #expect(try await status("/ctrl/status", bearer: secret) == "200")
        #expect(try await status("/ctrl/status", bearer: "not-the-secret-at-all") == "401")
        #expect(try await status("/ctrl/status", bearer: nil) == "401")
        #expect(try await status("/pub/health", bearer: nil) == "200")
        for process in [guarded, judge] {
            process.signal(SIGTERM)
            #expect(try await process.finish().status == 0, "a controller stops cleanly on SIGTERM")
        }
    }

    @Test("a drone that comes back without its state: the backends it no longer knows are lost at its hello, not kept alive by its heartbeats")
    func droneBackWithoutState() async throws {
        let cluster = try await TestCluster()
        let client = cluster.client
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-two"))
        let response = try await client.connect(try cluster.request("doc-amnesia"))
        let id = try BackendID(response.backend_id)
        _ = try await client.waitUntilReady(id)
        cluster.drone("dr-one").signal(SIGKILL)
        _ = try await cluster.drone("dr-one").finish()
        unlink(cluster.directory.path + "/dr-one.sqlite")
        try cluster.startDrone("dr-one")
        try await cluster.waitUntilConnected(["dr-one"])
        try await eventually("the backend recorded lost", timeout: .seconds(20)) {
            try await client.status(id).status == "terminated"
        }
        // The drone heartbeats again, so no silence sweep would ever end it, and its
        // heartbeats would renew the key forever: only the hello's list can.
        #expect(try await client.status(id).reason == "lost")
        try await client.drain(cluster: TestCluster.cluster, drone: try DroneName("dr-two"), false)
        #expect(try await client.connect(try cluster.request("doc-amnesia")).spawned, "its key is free")
        try await cluster.stop()
    }

    @Test(
        "bad flags of the controller, the drone and the client commands get a clear error and a nonzero status",
        arguments: [
            (["controller", "--listen", "nowhere"], [:], "--listen takes host:port"),
            (["controller", "--listen", "127.0.0.1:99999"], [:], "--listen takes host:port"),
            (["controller", "--store", ":memory:", "--lease", "1"], [:], "lease: at least 3 seconds"),
            (["controller", "--store", ":memory:", "--lost-after", "5"], [:], "lost-after"),
            (["controller", "--store", ":memory:", "--heartbeat", "20000"], [:], "heartbeat"),
            (["controller", "--store", ":memory:", "--cluster", "Not A Cluster"], [:], "cluster name"),
            (["controller", "--store", ":memory:"], ["HANGAR_CONTROLLER_TOKEN": "short"], "token: at least 16 bytes"),
            (["controller", "--store", ":memory:", "--heartbeat", "0"], [:], "heartbeat"),
            (["controller", "--store", ":memory:", "--heartbeat-freshness=-1"], [:], "heartbeat-freshness"),
            (["controller", "--store", ":memory:", "--token-lifetime", "0"], [:], "token-lifetime"),
            (["controller", "--store", ":memory:", "--token-lifetime", "9223372036854775"], [:], "token-lifetime"),
            (["controller", "--store", ":memory:", "--lost-after", "99999999"], [:], "lost-after"),
            (["controller", "--store", ":memory:", "--public-url", "not a url"], [:], "public-url: an http"),
            (["controller", "--store", ":memory:", "--forward-auth", "ftp://x"], [:], "forward-auth: an http"),
            (["controller", "--store", ":memory:", "--lease", "86401"], [:], "lease: at least 3 seconds and at most 86400"),
            (["controller", "--store", ":memory:", "--heartbeat-freshness", "40000"], [:], "heartbeat-freshness"),
            (["controller", "--store", ":memory:", "--public-url", "http://a.example/" + String(repeating: "x", count: 2100)], [:], "public-url: an http"),
            (["proxy"], ["HANGAR_CONTROLLER_TOKEN": "short", "HANGAR_INGRESS_SECRET": "an ingress secret of enough bytes"], "HANGAR_CONTROLLER_TOKEN: at least 16 bytes"),
            (["drone", "--controller", "http://127.0.0.1:1", "--state", ":memory:"], ["HANGAR_CONTROLLER_TOKEN": "short"], "HANGAR_CONTROLLER_TOKEN: at least 16 bytes"),
            (["status", "bk-0000000000000000"], ["HANGAR_CONTROLLER": "nonsense"], "HANGAR_CONTROLLER takes an http"),
            (["cluster", "--controller", "127.0.0.1:8080"], [:], "--controller takes an http"),
            (["drone", "--controller", "ftp://example", "--state", ":memory:"], [:], "--controller takes an http"),
            (["drone", "--controller", "http://127.0.0.1:1", "--name", "Bad Name"], [:], "--name: "),
            (["drone", "--controller", "http://127.0.0.1:1", "--pool", "Pool!"], [:], "--pool: "),
            (["connect", "", "--image", "busybox"], [:], "key"),
            (["connect", "doc", "--image", "../etc"], [:], "image"),
            (["connect", "doc", "--image", "busybox", "--env", "NOEQUALS"], [:], "--env takes name=value"),
            (["connect", "doc", "--namespace", "Upper Case"], [:], "namespace"),
            (["status", "bk-nope"], [:], "backend"),
            (["terminate", "nope"], [:], "backend"),
            (["drain", "Bad Drone", "--cluster", "c.local"], [:], "drone name"),
            (["connect", "doc", "--controller", "http://127.0.0.1:1"], [:], "the controller"),
        ] as [([String], [String: String], String)])
    func badFlags(arguments: [String], environment: [String: String], message: String) async throws {
        let result = try await HangarProcess.run(arguments, environment: environment)
        #expect(result.status != 0 && result.status < 128, "an error, not a crash: \(result)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test("the drone socket refuses a wrong version, a first message that is no hello, bad names and values, and garbage")
    func hostileDrones() async throws {
        let cluster = try await TestCluster(drones: [])
        func firstAnswer(_ opening: String) async throws -> String {
            let answer = Mutex<String>("")
            try await cluster.webSocket("drone-socket") { inbound, outbound, _ in
                try await outbound.write(.text(opening))
                for try await message in inbound.messages(maxSize: 1 << 16) {
                    if case .text(let text) = message { answer.withLock { $0 = text } }
                    break
                }
            }
            return answer.withLock { $0 }
        }
        let hello = #"{"type":"hello","drone":"dr-x","pool":"","capacity_backends":1,"capacity_memory":0,"backends":[]"#
        #expect(try await firstAnswer(hello + #","version":99}"#).contains("protocol version 99"))
        #expect(try await firstAnswer(#"{"type":"heartbeat","seq":1,"running":0}"#).contains("must be a hello"))
        #expect(try await firstAnswer("not json at all").contains(#""type":"refused""#))
        #expect(try await firstAnswer(#"{"type":"nonsense"}"#).contains("unknown message type"))
        let badName = hello.replacing(#""drone":"dr-x""#, with: #""drone":"Dr X""#) + #","version":1}"#
        #expect(try await firstAnswer(badName).contains("drone name"))
        for (ingress, capacity) in [
            ("\"x\"", 1), ("\"169.254.169.254:0\"", 1), ("\"a b:80\"", 1), ("\"example.com:9000\"", 1), ("\"[::1]:80\"", 1),
            ("\"127.0.0.1:8000\"", -5),
        ] {
            let opening = hello.replacing(#""capacity_backends":1"#, with: #""capacity_backends":\#(capacity)"#)
                + #","ingress":\#(ingress),"version":1}"#
            let answer = try await firstAnswer(opening)
            #expect(answer.contains(capacity < 0 ? "capacity_backends" : "ingress: expected IPv4-address:port"), "\(answer)")
        }
        let badPool = hello.replacing(#""pool":"""#, with: #""pool":"Pool!""#) + #","version":1}"#
        #expect(try await firstAnswer(badPool).contains("pool"))
        let state = try await cluster.client.clusterState(TestCluster.cluster)
        #expect(state.drones.isEmpty, "no refused drone was registered: \(state.drones.map(\.name))")
        try await cluster.stop()
    }
}
