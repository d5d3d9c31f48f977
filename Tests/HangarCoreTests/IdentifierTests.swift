import HangarCore
import Testing

@Suite("Identifiers and values")
struct IdentifierTests {
    @Test("image names are lowercase words, never paths", arguments: ["busybox", "python-3.11", "a_b", "0x"])
    func validImageNames(name: String) throws {
        #expect(try ImageName(name).rawValue == name)
    }

    @Test(
        "bad image names are refused with the reason",
        arguments: ["", "../x", "a/b", "Upper", ".hidden", "-x", String(repeating: "a", count: 65), "nul\u{0}"])
    func invalidImageNames(name: String) {
        #expect(throws: InvalidValue.self) { try ImageName(name) }
    }

    @Test("sandbox ids are sb- and 16 hex digits")
    func sandboxIDs() throws {
        let id = SandboxID.random()
        #expect(try SandboxID(id.rawValue) == id)
        #expect(id.rawValue.count == 19)
        #expect(throws: InvalidValue.self) { try SandboxID("sb-XYZ") }
        #expect(throws: InvalidValue.self) { try SandboxID("sb-0123456789ABCDEF") }
        #expect(SandboxID.random() != SandboxID.random())
    }

    @Test("sizes parse with binary units and refuse the rest")
    func byteSizes() throws {
        #expect(try ByteSize(parsing: "512m").bytes == 512 << 20)
        #expect(try ByteSize(parsing: "2GiB").bytes == 2 << 30)
        #expect(try ByteSize(parsing: "4096").bytes == 4096)
        #expect(try ByteSize(parsing: "1k").description == "1k")
        #expect(try ByteSize(parsing: "3g").description == "3g")
        for bad in ["", "m", "1.5g", "-1m", "12q", "99999999999t"] {
            #expect(throws: InvalidValue.self, "\(bad)") { try ByteSize(parsing: bad) }
        }
    }

    @Test("errors name what, the input and why")
    func errorMessages() {
        do {
            _ = try ImageName("Bad")
        } catch {
            #expect(error.description == "invalid image name \"Bad\": character \"B\" is not allowed")
        }
    }
}
