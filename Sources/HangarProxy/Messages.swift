import HangarCore

/// The token at the front of a request's path, and the target the backend gets (Plane's
/// rule): `/<token>/rest?query` goes to the backend as `/rest?query`; a static token
/// (`s.` in front) keeps the whole target. `/<token>` alone is `/`.
public struct RoutedTarget: Sendable, Equatable {
    public var token: String
    public var forwarded: String
    /// The path as the client sent it, without the query (x-verified-path).
    public var originalPath: String

    public init?(_ target: String) {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        let query = target.dropFirst(path.count)
        guard path.hasPrefix("/") else { return nil }
        let rest = path.dropFirst()
        let token = rest.prefix { $0 != "/" }
        guard !token.isEmpty else { return nil }
        self.token = String(token)
        originalPath = String(path)
        if token.hasPrefix("s.") {
            forwarded = target
        } else {
            let after = rest.dropFirst(token.count)
            forwarded = (after.isEmpty ? "/" : String(after)) + query
        }
    }
}

/// The Host checks of a cluster named "host[:port]": a request's Host must be the cluster
/// or a subdomain of it (Plane's rule; ":443" may be added or left out).
public enum ClusterHost {
    /// nil: the Host is not this cluster's; .some(nil): the cluster itself; else the label(s)
    /// in front of it.
    public static func subdomain(of host: String, cluster: String) -> String?? {
        var host = host.lowercased()
        let cluster = cluster.lowercased()
        if host.hasSuffix(":443"), !cluster.hasSuffix(":443") { host.removeLast(4) }
        if host == cluster { return .some(nil) }
        guard host.hasSuffix("." + cluster) else { return nil }
        let label = String(host.dropLast(cluster.count + 1))
        return label.isEmpty ? nil : .some(label)
    }
}

/// The heads the proxy writes.
enum Messages {
    static let server = "hangar"

    /// Fields that describe one connection, not the message: never passed on.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer"]

    /// Fields the proxy frames and routes by: never dropped because a Connection field
    /// names them (dropping Content-Length while splicing the body would make the body a
    /// second request to the backend).
    static let framing: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// The request head the backend gets: the client's, minus any x-verified-* field and
    /// hop-by-hop fields, plus who is asking (from the route) and where from.
    static func request(
        _ head: RequestHead, target: RoutedTarget, route: ProxyRoute, peer: String, scheme: String
    ) -> [UInt8] {
        var text = "\(head.method) \(target.forwarded) HTTP/1.\(head.minorVersion)\r\n"
        let named = connectionTokens(head.fields)
        var forwardedFor: String?
        var forwardedProto = false
        for field in head.fields {
            let name = field.name.lowercased()
            if name.hasPrefix("x-verified-") || hopByHop.contains(name) || named.contains(name) { continue }
            if name == "x-forwarded-for" {
                forwardedFor = (forwardedFor.map { $0 + ", " } ?? "") + field.value
                continue
            }
            if name == "x-forwarded-proto" { forwardedProto = true }
            text += "\(field.name): \(field.value)\r\n"
        }
        if let upgrade = head.upgrade {
            text += "connection: upgrade\r\nupgrade: \(upgrade)\r\n"
        } else if !head.keepAlive {
            text += "connection: close\r\n"
        } else if head.minorVersion == 0 {
            text += "connection: keep-alive\r\n"
        }
        text += "x-forwarded-for: \(forwardedFor.map { $0 + ", " } ?? "")\(peer)\r\n"
        if !forwardedProto { text += "x-forwarded-proto: \(scheme)\r\n" }
        if let user = route.user { text += "x-verified-username: \(clean(user))\r\n" }
        text += "x-verified-user-data: \(clean(route.auth))\r\n"
        text += "x-verified-path: \(target.originalPath)\r\n"
        text += "x-verified-backend: \(clean(route.backend_id))\r\n"
        text += "x-verified-secret: \(clean(route.secret_token))\r\n\r\n"
        return Array(text.utf8)
    }

    /// The response head the client gets: the backend's, minus hop-by-hop fields and any
    /// backend id or Server it set, plus the backend's id, the Server and Plane's
    /// permissive CORS unless the backend set its own.
    static func response(_ head: ResponseHead, backend: String, keepAlive: Bool, upgrade: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(head.status) \(head.reason)\r\n"
        let named = connectionTokens(head.fields)
        var cors = false
        for field in head.fields {
            let name = field.name.lowercased()
            if name == "upgrade" && upgrade {
                text += "\(field.name): \(field.value)\r\n"
                continue
            }
            if hopByHop.contains(name) || named.contains(name) || name == "server" || name == "x-hangar-backend-id"
                || name == "x-plane-backend-id"
            {
                continue
            }
            if name == "access-control-allow-origin" || name == "access-control-allow-methods"
                || name == "access-control-allow-headers"
            {
                cors = true
            }
            text += "\(field.name): \(field.value)\r\n"
        }
        if upgrade {
            text += "connection: upgrade\r\n"
        } else if !keepAlive {
            text += "connection: close\r\n"
        }
        if !cors { text += corsFields }
        text += "server: \(server)\r\nx-hangar-backend-id: \(backend)\r\nx-plane-backend-id: \(backend)\r\n\r\n"
        return Array(text.utf8)
    }

    static let corsFields =
        "access-control-allow-origin: *\r\naccess-control-allow-methods: *\r\naccess-control-allow-headers: *, Authorization\r\n"

    /// A response of the proxy's own: a short text body, CORS, and whether the connection
    /// stays open.
    static func reply(_ status: Int, _ body: String, keepAlive: Bool, location: String? = nil) -> [UInt8] {
        let text = body.isEmpty ? "" : body + "\n"
        var head = "HTTP/1.1 \(status) \(reason(status))\r\nserver: \(server)\r\n"
        if let location { head += "location: \(location)\r\n" }
        head += "content-type: text/plain; charset=utf-8\r\ncontent-length: \(text.utf8.count)\r\n"
        head += corsFields
        if !keepAlive { head += "connection: close\r\n" }
        return Array((head + "\r\n" + text).utf8)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 301: "Moved Permanently"
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 408: "Request Timeout"
        case 410: "Gone"
        case 413: "Content Too Large"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
    }

    /// The names a Connection field lists (they are hop-by-hop too).
    static func connectionTokens(_ fields: [HeadField]) -> Set<String> {
        let values = fields.filter { $0.name.lowercased() == "connection" }.map(\.value)
        return Set(HeadParser.connectionOptions(values)).subtracting(framing)
    }

    /// A value from the controller, made safe for a header line: CR, LF and NUL become
    /// spaces (by byte: "\r\n" is one Character in Swift).
    static func clean(_ value: String) -> String {
        let unsafe: (UInt8) -> Bool = { $0 == 13 || $0 == 10 || $0 == 0 }
        guard value.utf8.contains(where: unsafe) else { return value }
        return String(decoding: value.utf8.map { unsafe($0) ? 32 : $0 }, as: UTF8.self)
    }
}
