import HangarCore
import Testing

@testable import HangarController

/// Signed connection tokens: what a proxy's route request depends on.
@Suite("Connection tokens")
struct TokenTests {
    let signer = TokenSigner(key: randomBytes(32))

    @Test("a token carries its grant and expiry; each is new; its secret is its own")
    func roundTrip() {
        let token = signer.token(grant: 42, expiresAt: 1_800_000_000_123)
        #expect(token.utf8.count == TokenSigner.length)
        #expect(signer.verify(token)! == (42, 1_800_000_000_123))
        let other = signer.token(grant: 42, expiresAt: 1_800_000_000_123)
        #expect(other != token, "random bytes in every token")
        #expect(signer.secret(for: token) == signer.secret(for: token))
        #expect(signer.secret(for: token) != signer.secret(for: other))
        #expect(Base64URL.decode(signer.secret(for: token))?.count == 32)
    }

    @Test("a changed character, another key, another length or version: not a token")
    func forgeries() {
        let token = signer.token(grant: 7, expiresAt: 1_800_000_000_000)
        let characters = Array(token)
        for index in characters.indices {
            var forged = characters
            forged[index] = forged[index] == "A" ? "B" : "A"
            #expect(signer.verify(String(forged)) == nil, "character \(index) changed")
        }
        #expect(TokenSigner(key: randomBytes(32)).verify(token) == nil, "another controller's key")
        #expect(signer.verify(String(token.dropLast())) == nil)
        #expect(signer.verify(token + "A") == nil)
        #expect(signer.verify("s." + token.dropFirst(2)) == nil)
        var bytes = Base64URL.decode(token)!
        bytes[0] = 2
        #expect(signer.verify(Base64URL.encode(bytes)) == nil, "an unknown version")
        #expect(signer.verify(String(repeating: "=", count: TokenSigner.length)) == nil)
    }

    @Test("base64url round-trips every length and refuses what no encoding gives")
    func base64url() {
        for count in 0...40 {
            let bytes = randomBytes(count)
            let text = Base64URL.encode(bytes)
            #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
            #expect(Base64URL.decode(text) == bytes)
        }
        #expect(Base64URL.decode("A") == nil, "no encoding is one character long")
        #expect(Base64URL.decode("AB") == nil, "bits left over")
        #expect(Base64URL.decode("AA") == [0])
        #expect(Base64URL.decode("a+b/") == nil, "base64, not base64url")
        #expect(Base64URL.decode("ab\u{e9}") == nil)
    }
}
