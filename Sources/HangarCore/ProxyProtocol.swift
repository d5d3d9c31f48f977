/// The protocol between a proxy and the controller: JSON text messages over a WebSocket
/// the proxy opens (`GET /ctrl/c/:cluster/proxy-socket`). The proxy asks for the route of
/// a token; the controller answers, and tells every proxy of revoked tokens at once.
///
///     proxy                         controller
///     route-request {token}    ->
///                              <-   route {token, route?}
///                              <-   revoked {tokens}
public enum ProxyMessage: Codable, Sendable, Equatable {
    case routeRequest(token: String)
    case route(token: String, route: ProxyRoute?)
    case revoked(tokens: [String])

    enum CodingKeys: String, CodingKey { case type, token, route, tokens }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "route-request": self = .routeRequest(token: try container.decode(String.self, forKey: .token))
        case "route":
            self = .route(
                token: try container.decode(String.self, forKey: .token),
                route: try container.decodeIfPresent(ProxyRoute.self, forKey: .route))
        case "revoked": self = .revoked(tokens: try container.decode([String].self, forKey: .tokens))
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
        case .revoked(let tokens):
            try container.encode("revoked", forKey: .type)
            try container.encode(tokens, forKey: .tokens)
        }
    }
}

/// Where a token leads, and what the proxy tells the backend about the connection.
public struct ProxyRoute: Codable, Sendable, Equatable {
    public var backend_id: String
    public var drone: String
    /// The drone's ingress ("address:port"); nil: the drone has none.
    public var ingress: String?
    public var status: String
    public var user: String?
    /// The connect's auth object as JSON.
    public var auth: String
    public var secret_token: String

    public init(
        backend_id: String, drone: String, ingress: String?, status: String, user: String?, auth: String,
        secret_token: String
    ) {
        self.backend_id = backend_id
        self.drone = drone
        self.ingress = ingress
        self.status = status
        self.user = user
        self.auth = auth
        self.secret_token = secret_token
    }
}
