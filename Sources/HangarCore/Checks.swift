import CShims
import Glibc

/// "address:port" with an IPv4 address and a port from 1 to 65535: where a drone's ingress
/// listens and what a proxy dials (both take IPv4 only).
public struct IPv4Endpoint: Sendable, Equatable {
    public var address: String
    public var port: UInt16

    public init?(_ text: String) {
        guard text.utf8.count <= 21, let colon = text.lastIndex(of: ":"),
            let port = UInt16(text[text.index(after: colon)...]), port > 0
        else { return nil }
        let address = String(text[..<colon])
        var parsed = in_addr()
        guard inet_pton(AF_INET, address, &parsed) == 1 else { return nil }
        self.address = address
        self.port = port
    }
}

/// An http:// or https:// URL (what every role's URL options take).
public func isHTTPURL(_ text: String) -> Bool {
    text.hasPrefix("http://") || text.hasPrefix("https://")
}

/// Equal contents, compared in time that does not depend on where they differ (secrets,
/// signatures, tokens).
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && hg_equal_constant_time(a, b, a.count) == 1
}
