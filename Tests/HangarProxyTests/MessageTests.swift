import HangarCore
@testable import HangarProxy
import Testing

/// Response heads, the token in a path, the Host rule, and the heads the proxy writes.
@Suite("Proxy messages")
struct MessageTests {
    func response(_ text: String, method: String = "GET") throws(HeadError) -> ResponseHead {
        try HeadParser.response(Array(text.utf8), method: method)
    }

    @Test("response framing follows RFC 9112: HEAD, 1xx, 204 and 304 have no body; chunked; a length; else until close")
    func responseFraming() throws {
        #expect(try response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").body == .length(12))
        #expect(try response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", method: "HEAD").body == .none)
        #expect(try response("HTTP/1.1 204 No Content\r\n\r\n").body == .none)
        #expect(try response("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").body == .none)
        #expect(try response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n").body == .none)
        #expect(try response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").body == .chunked)
        let bare = try response("HTTP/1.1 200 OK\r\n\r\n")
        #expect(bare.body == .untilClose && !bare.keepAlive, "a body until close ends the connection")
        #expect(try response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keepAlive == false)
        #expect(try response("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").keepAlive == false)
        #expect(try response("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").reason == "")
    }

    @Test("a hostile backend's ambiguous responses are refused with 502")
    func hostileResponses() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 O\u{1}K\r\n\r\n",
            "HTTP/1.1 700 Odd\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        ] {
            #expect(throws: HeadError.self, "\(text.debugDescription)") { try response(text) }
            do { _ = try response(text) } catch { #expect(error.status == 502) }
        }
    }

    @Test("the token is the first path segment: stripped for a dynamic token, kept for a static one")
    func tokens() throws {
        let dynamic = try #require(RoutedTarget("/tok/a/b?q=1"))
        #expect(dynamic.token == "tok" && dynamic.forwarded == "/a/b?q=1" && dynamic.originalPath == "/tok/a/b")
        #expect(RoutedTarget("/tok")?.forwarded == "/")
        #expect(RoutedTarget("/tok/")?.forwarded == "/")
        #expect(RoutedTarget("/tok?x=1")?.forwarded == "/?x=1")
        let fixed = try #require(RoutedTarget("/s.abc/a?q"))
        #expect(fixed.token == "s.abc" && fixed.forwarded == "/s.abc/a?q")
        #expect(RoutedTarget("/") == nil)
        #expect(RoutedTarget("//x") == nil)
    }

    @Test("the Host must be the cluster or a subdomain of it (:443 may be added)")
    func hosts() {
        #expect(ClusterHost.subdomain(of: "example.com", cluster: "example.com") == .some(nil))
        #expect(ClusterHost.subdomain(of: "Foo.Example.com", cluster: "example.com") == .some("foo"))
        #expect(ClusterHost.subdomain(of: "foo.example.com:443", cluster: "example.com") == .some("foo"))
        #expect(ClusterHost.subdomain(of: "fooexample.com", cluster: "example.com") == nil)
        #expect(ClusterHost.subdomain(of: "foo.myhost", cluster: "myhost:8080") == nil)
        #expect(ClusterHost.subdomain(of: "foo.myhost:8080", cluster: "myhost") == nil)
        #expect(ClusterHost.subdomain(of: "evil.com", cluster: "example.com") == nil)
    }

    @Test("the backend's request head: x-verified-* replaced, hop-by-hop fields dropped, who and where from added")
    func requestHead() throws {
        let head = try HeadParser.request(
            Array(
                ("GET /tok/x HTTP/1.1\r\nHost: a.b\r\nX-Verified-User: evil\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n"
                    + "Keep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n").utf8))
        let route = ProxyRoute(
            backend_id: "bk-0123456789abcdef", grant: 7, expires_at: nil, subdomain: nil, drone: "d", ingress: "127.0.0.1:1",
            status: "ready", user: "ada\r\nInjected: yes", auth: "{}", secret_token: "sec")
        let text = String(
            decoding: Messages.request(head, target: RoutedTarget(head.target)!, route: route, peer: "10.0.0.9", scheme: "http"),
            as: UTF8.self)
        #expect(text.hasPrefix("GET /x HTTP/1.1\r\nHost: a.b\r\nAccept: */*\r\nconnection: close\r\n"))
        #expect(!text.contains("evil") && !text.contains("X-Drop") && !text.contains("Keep-Alive"))
        #expect(text.contains("x-forwarded-for: 1.2.3.4, 10.0.0.9\r\n"))
        #expect(text.contains("x-verified-username: ada  Injected: yes\r\n"), "CR and LF from the controller cannot split a field")
        #expect(text.hasSuffix("x-verified-secret: sec\r\n\r\n"))

        // A Connection field cannot make the proxy drop the fields it frames and routes by.
        let sneaky = try HeadParser.request(
            Array("POST /tok/x HTTP/1.1\r\nHost: a.b\r\nConnection: content-length, host\r\nContent-Length: 60\r\n\r\n".utf8))
        let forwarded = String(
            decoding: Messages.request(sneaky, target: RoutedTarget(sneaky.target)!, route: route, peer: "p", scheme: "http"),
            as: UTF8.self)
        #expect(forwarded.contains("Content-Length: 60\r\n") && forwarded.contains("Host: a.b\r\n"))
    }

    @Test("the client's response head: the backend's own CORS and upgrade kept, its backend id and Server replaced")
    func responseHead() throws {
        let own = try response("HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: https://a.b\r\nServer: x\r\nx-plane-backend-id: fake\r\nContent-Length: 0\r\n\r\n")
        let text = String(decoding: Messages.response(own, backend: "bk-1", keepAlive: true, upgrade: false), as: UTF8.self)
        #expect(text.contains("Access-Control-Allow-Origin: https://a.b\r\n") && !text.contains("allow-origin: *"))
        #expect(!text.contains("fake") && !text.contains("Server: x") && text.contains("x-plane-backend-id: bk-1\r\n"))
        let switched = try response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        let upgrade = String(decoding: Messages.response(switched, backend: "bk-1", keepAlive: true, upgrade: true), as: UTF8.self)
        #expect(upgrade.contains("Upgrade: websocket\r\n") && upgrade.contains("connection: upgrade\r\n"))
    }
}
