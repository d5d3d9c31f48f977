/// The protocol between a proxy and the controller: JSON text messages over a WebSocket
/// the proxy opens (`GET /ctrl/c/:cluster/proxy-socket`). The proxy asks for the route of
/// a token; the controller answers, and tells every proxy at once of what it must stop
/// routing: revoked tokens, revoked grants (a user's tokens), ended backends.
///
///     proxy                         controller
///     route-request {token}    ->
///                              <-   route {token, route?}
///                              <-   revoked {tokens?, grants?, backends?}
public enum ProxyMessage: Codable, Sendable, Equatable {
    case routeRequest(token: String)
    case route(token: String, route: ProxyRoute?)
    case revoked(Revocation)

    enum CodingKeys: String, CodingKey { case type, token, route }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "route-request": self = .routeRequest(token: try container.decode(String.self, forKey: .token))
        case "route":
            self = .route(
                token: try container.decode(String.self, forKey: .token),
                route: try container.decodeIfPresent(ProxyRoute.self, forKey: .route))
        case "revoked": self = .revoked(try Revocation(from: decoder))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container, debugDescription: "type: unknown message type \"\(type.prefix(32))\"")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .routeRequest(let token):
            try container.encode("route-request", forKey: .type)
            try container.encode(token, forKey: .token)
        case .route(let token, let route):
            try container.encode("route", forKey: .type)
            try container.encode(token, forKey: .token)
            try container.encodeIfPresent(route, forKey: .route)
        case .revoked(let revocation):
            try container.encode("revoked", forKey: .type)
            try revocation.encode(to: encoder)
        }
    }
}

/// What proxies must stop routing at once: these tokens, every token of these grants,
/// every token of these backends.
public struct Revocation: Codable, Sendable, Equatable {
    public var tokens: [String]
    public var grants: [Int64]
    public var backends: [String]

    public init(tokens: [String] = [], grants: [Int64] = [], backends: [String] = []) {
        self.tokens = tokens
        self.grants = grants
        self.backends = backends
    }

    enum CodingKeys: String, CodingKey { case tokens, grants, backends }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tokens = try container.decodeIfPresent([String].self, forKey: .tokens) ?? []
        grants = try container.decodeIfPresent([Int64].self, forKey: .grants) ?? []
        backends = try container.decodeIfPresent([String].self, forKey: .backends) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if !tokens.isEmpty { try container.encode(tokens, forKey: .tokens) }
        if !grants.isEmpty { try container.encode(grants, forKey: .grants) }
        if !backends.isEmpty { try container.encode(backends, forKey: .backends) }
    }
}

/// Where a token leads, and what the proxy tells the backend about the connection.
public struct ProxyRoute: Codable, Sendable, Equatable {
    public var backend_id: String
    /// The grant the token names: a revocation of it drops the route.
    public var grant: Int64
    /// When the token stops resolving (ms since the epoch); nil: a static token, as long
    /// as its backend lives.
    public var expires_at: Int64?
    /// The label in front of the cluster's host the request must come to, if any.
    public var subdomain: String?
    public var drone: String
    /// The drone's ingress ("address:port"); nil: the drone has none.
    public var ingress: String?
    public var status: String
    public var user: String?
    /// The connect's auth object as JSON.
    public var auth: String
    public var secret_token: String

    public init(
        backend_id: String, grant: Int64, expires_at: Int64?, subdomain: String?, drone: String, ingress: String?,
        status: String, user: String?, auth: String, secret_token: String
    ) {
        self.backend_id = backend_id
        self.grant = grant
        self.expires_at = expires_at
        self.subdomain = subdomain
        self.drone = drone
        self.ingress = ingress
        self.status = status
        self.user = user
        self.auth = auth
        self.secret_token = secret_token
    }
}
