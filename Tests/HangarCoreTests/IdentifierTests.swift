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

    @Test("backend ids are bk- and 16 lowercase hex digits")
    func backendIDs() throws {
        let id = BackendID.random()
        #expect(try BackendID(id.rawValue) == id)
        for bad in ["", "bk-", "bk-0000", "bk-0123456789ABCDEF", "sb-0123456789abcdef", "bk-0123456789abcdef0", "bk-../../etc/pa"] {
            #expect(throws: InvalidValue.self, "\(bad)") { try BackendID(bad) }
        }
    }

    @Test("keys are any text without control characters, up to 255 bytes")
    func keys() throws {
        for good in ["doc-1", "user@example.com/notes", "ключ", "a b", String(repeating: "k", count: 255)] {
            #expect(try KeyName(good).rawValue == good)
        }
        for bad in ["", "line\nbreak", "nul\u{0}", "tab\t", "del\u{7f}", String(repeating: "k", count: 256)] {
            #expect(throws: InvalidValue.self, "\(bad.debugDescription)") { try KeyName(bad) }
        }
    }

    @Test("namespaces, drones, clusters and pools: lowercase names; a namespace and a pool may be empty")
    func clusterNames() throws {
        #expect(try NamespaceName("") == .default)
        #expect(try PoolName("") == .default)
        #expect(try ClusterName("localhost:9090").rawValue == "localhost:9090")
        #expect(try DroneName("dr-a.1").rawValue == "dr-a.1")
        for bad in ["", "Upper", "-x", ":9090", "a/b", "a b", String(repeating: "a", count: 65)] {
            #expect(throws: InvalidValue.self, "\(bad)") { try DroneName(bad) }
            #expect(throws: InvalidValue.self, "\(bad)") { try ClusterName(bad) }
        }
        for bad in ["Upper", "a/b", "a:b", String(repeating: "a", count: 65)] {
            #expect(throws: InvalidValue.self, "\(bad)") { try NamespaceName(bad) }
        }
        #expect(throws: InvalidValue.self) { try PoolName("-x") }
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
