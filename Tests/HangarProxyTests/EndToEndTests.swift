import FoundationEssentials
import Glibc
import HangarClient
import HangarCore
import HangarTestSupport
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization
import Testing

/// The whole path, with real processes: connect -> URL -> the proxy -> the drone's
/// ingress -> a backend in a sandbox, over HTTP and WebSocket.
extension String {
    /// A connect's http:// URL as the ws:// URL of the collab example's WebSocket.
    var webSocketURL: String { "ws://" + dropFirst("http://".count) + "ws" }
}

@Suite("proxy end to end", .serialized, .timeLimit(.minutes(5)))
struct EndToEndTests {
    /// Opens a WebSocket to `url`, sends `messages` one at a time, and returns what came
    /// back, the document's first state included.
    static func webSocket(_ url: String, send messages: [String], expect count: Int) async throws -> [String] {
        let received = Mutex<[String]>([])
        try await WebSocketClient.connect(url: url, logger: Logger(label: "test.ws")) { inbound, outbound, _ in
            var iterator = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            var pending = messages
            while received.withLock({ $0.count }) < count, let message = try await iterator.next() {
                if case .text(let text) = message { received.withLock { $0.append(text) } }
                if !pending.isEmpty { try await outbound.write(.text(pending.removeFirst())) }
            }
            try await outbound.close(.normalClosure, reason: nil)
        }
        return received.withLock { $0 }
    }

    @Test("connect, a WebSocket through the proxy while the backend starts, close, idle shutdown, the key freed, a new backend")
    func connectEchoIdleAgain() async throws {
        let stack = try await ProxyStack()
        let client = stack.client
        let first = try await client.connect(try stack.request("doc-idle", maxIdle: 2))
        #expect(first.spawned)
        // Straight away: the proxy holds the upgrade until the backend is ready.
        let echoed = try await Self.webSocket(
            first.url.webSocketURL, send: ["hello", "world"], expect: 3)
        #expect(echoed == ["", "hello", "world"])
        let id = try BackendID(first.backend_id)
        try await eventually("the idle backend ended", timeout: .seconds(30)) {
            try await client.status(id).status == "terminated"
        }
        #expect(try await client.status(id).reason == "idle")
        let second = try await client.connect(try stack.request("doc-idle", maxIdle: 2))
        #expect(second.spawned && second.backend_id != first.backend_id, "a new backend for the freed key")
        let again = try await Self.webSocket(
            second.url.webSocketURL, send: ["fresh"], expect: 2)
        #expect(again == ["", "fresh"], "the new process starts with an empty document")
        try await stack.stop()
    }

    @Test("two clients of one key reach the same process: an edit of one reaches the other")
    func twoClientsOneProcess() async throws {
        let stack = try await ProxyStack()
        let client = stack.client
        let one = try await client.connect(try stack.request("doc-shared"))
        let two = try await client.connect(try stack.request("doc-shared", user: "grace"))
        #expect(one.backend_id == two.backend_id && !two.spawned)
        #expect(one.token != two.token)
        _ = try await client.waitUntilReady(try BackendID(one.backend_id))
        _ = try await Self.webSocket(one.url.webSocketURL, send: ["from one"], expect: 2)
        let doc = try ProxyStack.get(port: stack.proxyPort, ProxyStack.path(of: two) + "doc")
        #expect(doc.status == 200 && doc.body == "from one")
        try await stack.stop()
    }

    @Test("two tokens on one keep-alive connection reach their own backends, one request at a time and pipelined")
    func keepAliveTwoTokens() async throws {
        let stack = try await ProxyStack()
        let client = stack.client
        let a = try await client.connect(try stack.request("doc-a"))
        let b = try await client.connect(try stack.request("doc-b"))
        #expect(a.backend_id != b.backend_id)
        let connection = try HTTPExchange(port: stack.proxyPort)
        let host = stack.cluster.rawValue
        for (response, expected) in [(a, a.backend_id), (b, b.backend_id), (a, a.backend_id)] {
            try connection.send("GET \(ProxyStack.path(of: response))whoami HTTP/1.1\r\nHost: \(host)\r\n\r\n")
            let answer = try connection.response()
            #expect(answer.status == 200)
            #expect(answer.field("x-hangar-backend-id") == expected)
            #expect(answer.body.contains("\"x-verified-backend\": \"\(expected)\""), "\(answer.body)")
        }
        // Pipelined: both requests written before either answer is read.
        try connection.send(
            "GET \(ProxyStack.path(of: b))doc HTTP/1.1\r\nHost: \(host)\r\n\r\n"
                + "GET \(ProxyStack.path(of: a))doc HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(try connection.response().field("x-hangar-backend-id") == b.backend_id)
        #expect(try connection.response().field("x-hangar-backend-id") == a.backend_id)
        try await stack.stop()
    }

    @Test("Plane's proxy behaviours: root, tokens, Host and subdomain checks, headers, CORS, /ready")
    func planeBehaviours() async throws {
        let stack = try await ProxyStack()
        let port = stack.proxyPort
        let host = stack.cluster.rawValue

        let root = try ProxyStack.get(port: port, "/")
        #expect(root.status == 400)
        #expect(root.field("access-control-allow-origin") == "*", "CORS on errors too")
        #expect(try ProxyStack.get(port: port, "/not-a-token/").status == 410)
        #expect(try ProxyStack.get(port: port, "/s.unknown-static/x").status == 410)

        let response = try await stack.client.connect(try stack.request("doc-headers"))
        let path = ProxyStack.path(of: response)
        let connection = try HTTPExchange(port: port)
        try connection.send(
            "GET \(path)whoami?q=1 HTTP/1.1\r\nHost: \(host)\r\nX-Verified-Username: mallory\r\n"
                + "x-verified-secret: forged\r\nx-forwarded-for: 203.0.113.9\r\n\r\n")
        let whoami = try connection.response()
        #expect(whoami.status == 200)
        #expect(whoami.field("x-hangar-backend-id") == response.backend_id)
        #expect(whoami.field("x-plane-backend-id") == response.backend_id)
        #expect(whoami.field("server") == "hangar")
        #expect(whoami.field("access-control-allow-origin") == "*")
        #expect(whoami.field("access-control-allow-headers") == "*, Authorization")
        struct Seen: Decodable {
            var target: String
            var xVerifiedUsername: String?
            var xVerifiedSecret: String?
            var xVerifiedBackend: String?
            var xVerifiedPath: String?
            var xVerifiedUserData: String?
            var xForwardedFor: String?
            var xForwardedProto: String?
            enum CodingKeys: String, CodingKey {
                case target
                case xVerifiedUsername = "x-verified-username", xVerifiedSecret = "x-verified-secret"
                case xVerifiedBackend = "x-verified-backend", xVerifiedPath = "x-verified-path"
                case xVerifiedUserData = "x-verified-user-data", xForwardedFor = "x-forwarded-for"
                case xForwardedProto = "x-forwarded-proto"
            }
        }
        let seen = try JSONDecoder().decode(Seen.self, from: Data(whoami.body.utf8))
        #expect(seen.target == "/whoami?q=1", "the token is stripped from the path, the query kept")
        #expect(seen.xVerifiedUsername == "ada", "a forged x-verified-username is replaced")
        #expect(seen.xVerifiedSecret == response.secret_token, "a forged secret is replaced")
        #expect(seen.xVerifiedBackend == response.backend_id)
        #expect(seen.xVerifiedPath == "\(path)whoami")
        #expect(seen.xVerifiedUserData == #"{"team":"blue"}"#)
        #expect(seen.xForwardedFor == "203.0.113.9, 127.0.0.1")
        #expect(seen.xForwardedProto == "http")

        // Host checks: another host is refused; a subdomain backend only on its subdomain.
        #expect(try ProxyStack.get(port: port, "\(path)doc", host: "elsewhere.example:80").status == 403)
        let labelled = try await stack.client.connect(try stack.request("doc-sub", subdomain: "blue"))
        #expect(labelled.url.hasPrefix("http://blue.\(host)/"))
        let labelledPath = ProxyStack.path(of: labelled)
        _ = try await stack.client.waitUntilReady(try BackendID(labelled.backend_id))
        #expect(try ProxyStack.get(port: port, "\(labelledPath)doc", host: host).status == 403, "missing subdomain")
        #expect(try ProxyStack.get(port: port, "\(labelledPath)doc", host: "red.\(host)").status == 403, "wrong subdomain")
        #expect(try ProxyStack.get(port: port, "\(labelledPath)doc", host: "blue.\(host)").status == 200)

        // /ready: 200 with the controller, 503 without (a proxy whose controller is away).
        #expect(try ProxyStack.get(port: port, "/ready").status == 200)
        let lonely = Int(try freeLoopbackPort())
        let alone = try HangarProcess.start(
            ["proxy", "--controller", "http://127.0.0.1:\(Int(try freeLoopbackPort()))", "--cluster", host, "--listen", "127.0.0.1:\(lonely)",
             "--root-redirect", "https://example.com/welcome"],
            environment: ["HANGAR_INGRESS_SECRET": stack.secret])
        try await alone.waitForOutput("listening on")
        let notReady = try ProxyStack.get(port: lonely, "/ready")
        #expect(notReady.status == 503)
        let redirected = try ProxyStack.get(port: lonely, "/")
        #expect(redirected.status == 301 && redirected.field("location") == "https://example.com/welcome")
        #expect(try ProxyStack.get(port: lonely, "\(path)doc", host: host).status == 503, "no routes without the controller")
        alone.signal(SIGTERM)
        _ = try await alone.finish()
        try await stack.stop()
    }

    @Test("the Python REPL example: a session keeps its variables, another key is another process, the code sees the sandbox")
    func pythonRepl() async throws {
        let stack = try await ProxyStack()
        let one = try await stack.client.connect(try stack.request("session-1", example: "python-repl"))
        let two = try await stack.client.connect(try stack.request("session-2", example: "python-repl"))
        let connection = try HTTPExchange(port: stack.proxyPort)
        let host = stack.cluster.rawValue
        struct Ran: Decodable {
            var stdout: String
            var stderr: String
            var error: String?
        }
        func run(_ session: ConnectResponse, _ code: String, chunked: Bool = false) throws -> Ran {
            let body = Array(code.utf8)
            let framing =
                chunked
                ? "Transfer-Encoding: chunked\r\n\r\n" + String(body.count, radix: 16) + "\r\n" + code + "\r\n0\r\n\r\n"
                : "Content-Length: \(body.count)\r\n\r\n" + code
            try connection.send("POST \(ProxyStack.path(of: session))run HTTP/1.1\r\nHost: \(host)\r\n" + framing)
            let answer = try connection.response()
            guard answer.status == 200 else { throw TestFailure("\(answer.status): \(answer.body)") }
            return try JSONDecoder().decode(Ran.self, from: Data(answer.body.utf8))
        }
        #expect(try run(one, "x = 6 * 7").error == nil)
        #expect(try run(one, "x").stdout == "42\n", "the session keeps its variables")
        #expect(try run(one, "print(x + 1)", chunked: true).stdout == "43\n", "a chunked body through the proxy")
        #expect(try run(two, "x").error?.contains("NameError") == true, "another key is another process")
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        let inside = try run(one, "import os, socket; print(os.getuid(), socket.gethostname() != '\(String(cString: name))')")
        #expect(inside.stdout == "0 True\n", "root inside, the sandbox's own hostname: \(inside)")
        let egress = try run(
            one,
            "import socket\ntry:\n socket.create_connection(('127.0.0.1', \(stack.proxyPort)), timeout=1)\n print('reached')\n"
                + "except OSError as e:\n print(type(e).__name__)")
        #expect(egress.stdout == "ConnectionRefusedError\n", "the host's proxy port is not on the sandbox's loopback: \(egress)")
        try await stack.stop()
    }

    @Test("a revoked token is refused at once, and its open WebSocket is closed")
    func revokedToken() async throws {
        let stack = try await ProxyStack()
        let response = try await stack.client.connect(try stack.request("doc-revoke"))
        _ = try await stack.client.waitUntilReady(try BackendID(response.backend_id))
        let path = ProxyStack.path(of: response)
        #expect(try ProxyStack.get(port: stack.proxyPort, path + "doc").status == 200)

        // A WebSocket held open through the proxy (raw, so its end can be watched).
        let socket = try HTTPExchange(port: stack.proxyPort)
        try socket.send(
            "GET \(path)ws HTTP/1.1\r\nHost: \(stack.cluster)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(try socket.response().status == 101)

        _ = try await stack.client.revoke(RevokeRequest(backend_id: try BackendID(response.backend_id), token: response.token))
        try await eventually("the revoked token is refused") {
            (try? ProxyStack.get(port: stack.proxyPort, path + "doc").status) == 410
        }
        #expect(socket.closedByPeer(), "the revoked token's WebSocket was closed")
        let fresh = try await stack.client.connect(try stack.request("doc-revoke"))
        #expect(try ProxyStack.get(port: stack.proxyPort, ProxyStack.path(of: fresh) + "doc").status == 200)
        try await stack.stop()
    }
}

/// What the proxy refuses, and what it says when a backend cannot be reached.
@Suite("proxy refusals", .serialized, .timeLimit(.minutes(5)))
struct RefusalTests {
    @Test("hostile heads are refused and closed (smuggling pairs, oversize, slowloris, bad tokens); the proxy stays healthy")
    func hostileHeads() async throws {
        let stack = try await ProxyStack(proxyArguments: ["--head-timeout", "1"])
        let response = try await stack.client.connect(try stack.request("doc-hostile"))
        _ = try await stack.client.waitUntilReady(try BackendID(response.backend_id))
        let path = ProxyStack.path(of: response)
        let host = "Host: \(stack.cluster)\r\n"
        let get = "GET \(path)doc HTTP/1.1\r\n"
        let cases: [(String, Int, String)] = [
            (get + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "CL with TE"),
            (get + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, "two lengths"),
            (get + host + "Content-Length: 5, 5\r\n\r\n", 400, "a list as a length"),
            (get + host + "Transfer-Encoding: gzip\r\n\r\n", 501, "a coding other than chunked"),
            (get + host + " folded: yes\r\n\r\n", 400, "obs-fold"),
            (get + host + "Name : value\r\n\r\n", 400, "space before the colon"),
            (get + host + "X: a\rb\r\n\r\n", 400, "a bare CR"),
            (get + "\r\n", 400, "no Host"),
            (get + host + host + "\r\n", 400, "two Hosts"),
            ("GET http://evil.example/ HTTP/1.1\r\n" + host + "\r\n", 400, "absolute-form target"),
            ("GET \(path)doc HTTP/2.0\r\n" + host + "\r\n", 505, "another version"),
            (get + host + "X-Big: " + String(repeating: "a", count: 20_000) + "\r\n\r\n", 431, "an oversized head"),
            (get + host + String(repeating: "X-Many: 1\r\n", count: 150) + "\r\n", 431, "too many fields"),
            ("GET /../../etc/passwd HTTP/1.1\r\n" + host + "\r\n", 410, "a path as a token"),
            ("GET /" + String(repeating: "t", count: 5000) + "/ HTTP/1.1\r\n" + host + "\r\n", 410, "a huge token"),
            ("POST \(path)doc HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "a malformed chunk size"),
            (
                "POST \(path)doc HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Verified-Username: root\r\n\r\n",
                400, "a forged x-verified trailer"
            ),
        ]
        for (request, status, what) in cases {
            let connection = try HTTPExchange(port: stack.proxyPort)
            try connection.send(request)
            let answer = try connection.response()
            #expect(answer.status == status, "\(what): \(answer.status) \(answer.body)")
            #expect(answer.field("access-control-allow-origin") == "*", "\(what)")
            if status != 410 { #expect(connection.closedByPeer(), "\(what): the connection is closed") }
        }

        // Thousands of pipelined requests answered from the cache (a bad token's 410) are
        // answered one by one, without the proxy's stack growing per request.
        let pipelined = try HTTPExchange(port: stack.proxyPort)
        _ = try ProxyStack.get(port: stack.proxyPort, "/bad-token/", host: stack.cluster.rawValue)
        try pipelined.send(String(repeating: "GET /bad-token/ HTTP/1.1\r\n" + host + "\r\n", count: 3000))
        var gone = 0
        for _ in 0..<3000 where try pipelined.response().status == 410 { gone += 1 }
        #expect(gone == 3000)

        // Slow heads: a partial head gets 408 and the end; a silent connection is closed.
        let slow = try HTTPExchange(port: stack.proxyPort)
        try slow.send("GET \(path)doc HTTP/1.1\r\nHo")
        let silent = try HTTPExchange(port: stack.proxyPort)
        let started = ContinuousClock.now
        #expect(try slow.response().status == 408)
        #expect(silent.closedByPeer())
        #expect(ContinuousClock.now - started < .seconds(5))

        // Many idle connections hold nothing up; the proxy still carries a request.
        let idle = try (0..<200).map { _ in try HTTPExchange(port: stack.proxyPort) }
        let healthy = try ProxyStack.get(port: stack.proxyPort, path + "doc", host: stack.cluster.rawValue)
        #expect(healthy.status == 200)
        #expect(idle.count == 200)
        try await stack.stop()
    }

    @Test("a hostile backend: ambiguous framing, an unasked 101, a huge head, cut bodies and a smuggled second response reach no client as a response")
    func hostileBackend() async throws {
        let stack = try await ProxyStack()
        // Canned answers by path; "/" answers the readiness probe.
        let hostile = #"""
            import socket, threading
            answers = {
                "/": b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                "/both": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                "/switch": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                "/huge": b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20000 + b"\r\ncontent-length: 0\r\n\r\n",
                "/short": b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc",
                "/badchunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
                "/early": b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                "/extra": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
                "/plain": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain",
            }
            def serve(c):
                data = b""
                try:
                    while True:
                        while b"\r\n\r\n" not in data:
                            more = c.recv(65536)
                            if not more: return
                            data += more
                        head, data = data.split(b"\r\n\r\n", 1)
                        path = head.split(b" ")[1].decode()
                        c.sendall(answers.get(path, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"))
                        if path in ("/short", "/badchunk"): return
                finally:
                    c.close()
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 8080)); s.listen()
            while True:
                c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
            """#
        let response = try await stack.client.connect(try stack.request("hostile", program: hostile))
        _ = try await stack.client.waitUntilReady(try BackendID(response.backend_id))
        let path = ProxyStack.path(of: response)
        let host = stack.cluster.rawValue
        for (what, status) in [("both", 502), ("switch", 502), ("huge", 502)] {
            let answer = try ProxyStack.get(port: stack.proxyPort, path + what, host: host)
            #expect(answer.status == status, "\(what): \(answer.status) \(answer.body)")
        }
        // A body cut short or a bad chunk after the head has gone: the connection ends there.
        for what in ["short", "badchunk"] {
            let connection = try HTTPExchange(port: stack.proxyPort)
            try connection.send("GET \(path)\(what) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
            let text = try connection.readToEnd()
            #expect(text.hasPrefix("HTTP/1.1 200 OK"), "\(what): \(text.prefix(80))")
            #expect(!text.contains("HTTP/1.1 200 OK\r\n", after: 1), "\(what)")
        }
        // Interim responses pass; a second response smuggled after a body answers nothing.
        let connection = try HTTPExchange(port: stack.proxyPort)
        try connection.send("GET \(path)early HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(try connection.response().status == 103)
        #expect(try connection.response().body == "ok")
        try connection.send("GET \(path)extra HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(try connection.response().body == "ok")
        try connection.send("GET \(path)plain HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        #expect(try connection.response().body == "plain", "the next request gets its own answer, not the smuggled one")
        try await stack.stop()
    }

    @Test("502 when the backend refuses the connection, 504 when it is not ready in time")
    func unreachableAndSlowBackends() async throws {
        let stack = try await ProxyStack(proxyArguments: ["--ready-timeout", "2"])
        // Ready once its probe is answered, then it closes its listener.
        let oneShot = """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 8080)); s.listen()
            c, _ = s.accept(); c.recv(1000); c.sendall(b"HTTP/1.0 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n"); c.close(); s.close()
            time.sleep(600)
            """
        let gone = try await stack.client.connect(try stack.request("one-shot", program: oneShot))
        _ = try await stack.client.waitUntilReady(try BackendID(gone.backend_id))
        let refused = try ProxyStack.get(port: stack.proxyPort, ProxyStack.path(of: gone), host: stack.cluster.rawValue)
        #expect(refused.status == 502, "\(refused.body)")

        let never = try await stack.client.connect(try stack.request("never-ready", program: "import time; time.sleep(600)"))
        let started = ContinuousClock.now
        let late = try ProxyStack.get(port: stack.proxyPort, ProxyStack.path(of: never), host: stack.cluster.rawValue)
        #expect(late.status == 504, "\(late.body)")
        #expect(ContinuousClock.now - started >= .seconds(2))
        try await stack.stop()
    }
}
