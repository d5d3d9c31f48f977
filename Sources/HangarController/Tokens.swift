import Crypto
import HangarCore

/// Connection tokens, signed instead of stored. A token names an access grant (who may
/// reach which backend) and says until when; the controller's key (kept in the store)
/// signs it. So a connect to a key that has its backend and its user's grant writes
/// nothing, and the store does not grow with every connect. Revoking deletes grants
/// (every token naming one stops resolving) or refuses one token by value.
///
///     token  = base64url(1 | grant (8 bytes, big-endian) | expires, ms (8) | random (8) | MAC (16))
///     MAC    = HMAC-SHA256(key, "hangar token v1" | the 25 bytes before it), first 16 bytes
///     secret = base64url(HMAC-SHA256(key, "hangar secret v1" | token))
///
/// A static token ("s." and 32 random bytes) is stored with its grant instead.
struct TokenSigner: Sendable {
    static let version: UInt8 = 1
    /// 25 bytes of payload and 16 of MAC: 55 characters.
    static let length = 55
    /// HMACs keyed once and copied per use: the key schedule is not redone per token.
    private let tokenMAC: HMAC<SHA256>
    private let secretMAC: HMAC<SHA256>

    init(key: [UInt8]) {
        let key = SymmetricKey(data: key)
        var tokenMAC = HMAC<SHA256>(key: key)
        tokenMAC.update(data: Array("hangar token v1".utf8))
        var secretMAC = HMAC<SHA256>(key: key)
        secretMAC.update(data: Array("hangar secret v1".utf8))
        self.tokenMAC = tokenMAC
        self.secretMAC = secretMAC
    }

    /// A token for a grant until `expiresAt` (ms since the epoch); each one is new.
    func token(grant: Int64, expiresAt: Int64) -> String {
        var payload: [UInt8] = [Self.version]
        payload.reserveCapacity(41)
        Self.append(grant, to: &payload)
        Self.append(expiresAt, to: &payload)
        payload += randomBytes(8)
        payload += mac(payload)
        return Base64URL.encode(payload)
    }

    /// The grant and expiry a token carries, if this key signed it.
    func verify(_ token: String) -> (grant: Int64, expiresAt: Int64)? {
        guard token.utf8.count == Self.length, let bytes = Base64URL.decode(token), bytes.count == 41,
            bytes[0] == Self.version
        else { return nil }
        let payload = bytes[0..<25]
        guard constantTimeEqual(Array(bytes[25...]), mac(payload)) else { return nil }
        return (Self.integer(bytes[1..<9]), Self.integer(bytes[9..<17]))
    }

    /// The secret the backend hears with each request of a token (x-verified-secret), which
    /// only the token's holder and the backend know.
    func secret(for token: String) -> String {
        var mac = secretMAC
        mac.update(data: Array(token.utf8))
        return Base64URL.encode(Array(mac.finalize()))
    }

    private func mac(_ payload: some Collection<UInt8>) -> [UInt8] {
        var mac = tokenMAC
        mac.update(data: Array(payload))
        return Array(mac.finalize().prefix(16))
    }

    private static func append(_ value: Int64, to bytes: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> Int64(shift))) }
    }

    private static func integer(_ bytes: ArraySlice<UInt8>) -> Int64 {
        bytes.reduce(0) { $0 << 8 | Int64($1) }
    }
}
