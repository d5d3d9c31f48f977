import Glibc
import HangarCore
import HangarPolicy
import HangarSandbox
import HangarTestSupport
import Testing

/// A temporary directory of policy files, removed at the end.
final class PolicyFolder {
    let path: String

    init(_ files: [String: String]) throws {
        var template = Array("/tmp/hangar-policies-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: errno \(errno)") }
        path = String(cString: made)
        for (name, text) in files { try write(name, text) }
    }

    func write(_ name: String, _ text: String) throws {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TestFailure("writing \(name): errno \(errno)") }
        defer { close(fd) }
        _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
    }

    func load(_ name: String) throws(PolicyError) -> Policy {
        try PolicyLoader(directory: path).load(path: path + "/" + name)
    }

    deinit {
        for name in entries(of: path) { unlink(path + "/" + name) }
        rmdir(path)
    }
}

@Suite("Policies")
struct PolicyTests {
    @Test("the shipped policies load, and their effective form reads back as the same policy")
    func shippedPolicies() throws {
        let loader = PolicyLoader(directory: TestSandbox.repositoryRoot + "/policies")
        for image in ["busybox", "python", "default", "no-such-image"] {
            let policy = try loader.policy(forImage: try ImageName(image))
            let folder = try PolicyFolder(["effective.toml": policy.toml])
            var again = try folder.load("effective.toml")
            again.name = policy.name
            again.files = policy.files
            #expect(again.process == policy.process, "\(image)")
            #expect(again.limits == policy.limits, "\(image)")
            #expect(again.maxima == policy.maxima, "\(image)")
            #expect(again.filesystem == policy.filesystem, "\(image)")
            #expect(again.seccomp == policy.seccomp, "\(image)")
        }
        let python = try loader.policy(forImage: try ImageName("python"))
        #expect(python.process.command == ["python3", "-I", "-q"])
        #expect(python.limits.memoryMax == .mebibytes(1024))
        #expect(python.limits.wallTimeout == 4 * 3600)
        #expect(python.filesystem.mounts == [.tmpfs(target: "/scratch", size: .mebibytes(256))])
        #expect(python.files.map { $0.split(separator: "/").last! } == ["default.toml", "python.toml"])
    }

    @Test("extends: the extending file wins key by key; env and rlimits merge, arrays are replaced")
    func extendsMerges() throws {
        let folder = try PolicyFolder([
            "base.toml": """
                [process]
                command = "base-cmd"
                args = ["a", "b"]
                [process.env]
                KEEP = "base"
                OVERRIDE = "base"
                [limits]
                memory_max = "256m"
                pids_max = 64
                [seccomp]
                allow = ["personality"]
                """,
            "child.toml": """
                extends = "base"
                [process]
                args = ["c"]
                [process.env]
                OVERRIDE = "child"
                [limits]
                pids_max = 32
                """,
        ])
        let policy = try folder.load("child.toml")
        #expect(policy.process.command == ["base-cmd", "c"])
        let env = Dictionary(uniqueKeysWithValues: policy.process.environment.map { ($0.name, $0.value) })
        #expect(env["KEEP"] == "base")
        #expect(env["OVERRIDE"] == "child")
        #expect(env["PATH"] != nil, "the built-in defaults are the base of every policy")
        #expect(policy.limits.memoryMax == .mebibytes(256))
        #expect(policy.limits.pidsMax == 32)
        #expect(policy.seccomp.allow.map(\.name) == ["personality"])
        #expect(policy.files.count == 2)
    }

    @Test("a request may lower any limit and raise one only up to limits.max")
    func requests() throws {
        let folder = try PolicyFolder([
            "p.toml": """
                [limits]
                memory_max = "256m"
                pids_max = 64
                [limits.max]
                memory_max = "1g"
                """
        ])
        let policy = try folder.load("p.toml")
        var request = Policy.Limits.unset
        request.memoryMax = .mebibytes(1024)
        request.pidsMax = 16
        let applied = try policy.applying(request: request)
        #expect(applied.limits.memoryMax == .mebibytes(1024))
        #expect(applied.limits.pidsMax == 16)

        request.memoryMax = .mebibytes(2048)
        let tooMuch = #expect(throws: PolicyError.self) { try policy.applying(request: request) }
        #expect(tooMuch?.description == "request: limits.memory_max: 2g is above the policy's maximum 1g (limits.max.memory_max in \(folder.path)/p.toml)")

        var morePids = Policy.Limits.unset
        morePids.pidsMax = 65
        let noMaximum = #expect(throws: PolicyError.self) { try policy.applying(request: morePids) }
        #expect(noMaximum?.reason.contains("above the policy's maximum 64 (limits.pids_max") == true)

        var tiny = Policy.Limits.unset
        tiny.memoryMax = ByteSize(bytes: 1024)
        let tooSmall = #expect(throws: PolicyError.self) { try policy.applying(request: tiny) }
        #expect(tooSmall?.description == "request: limits.memory_max: 1k is below the smallest value, 4m")
    }

    @Test("a request that lowers memory_max takes memory_high down in proportion")
    func memoryHighFollows() throws {
        let python = try PolicyLoader(directory: TestSandbox.repositoryRoot + "/policies")
            .policy(forImage: try ImageName("python"))
        var request = Policy.Limits.unset
        request.memoryMax = .mebibytes(512)
        let applied = try python.applying(request: request)
        #expect(applied.limits.memoryMax == .mebibytes(512))
        #expect(applied.limits.memoryHigh == .mebibytes(384), "768m of 1g is three quarters")
    }

    @Test("the spec: command, environment, limits, mounts within the operator's bind sources, seccomp additions")
    func spec() throws {
        let folder = try PolicyFolder([
            "p.toml": """
                [process]
                command = "sh"
                args = ["-c", "true"]
                uid = 1000
                umask = "077"
                [process.rlimits]
                nofile = 64
                nproc = 100
                [limits]
                memory_max = "64m"
                cpu = 0.5
                wall_timeout = "1m30s"
                [filesystem]
                data_dir = "/data"
                [[filesystem.mounts]]
                type = "bind"
                source = "/etc"
                target = "/host-etc"
                [[filesystem.mounts]]
                type = "tmpfs"
                target = "/scratch"
                size = "8m"
                [seccomp]
                errno = "EACCES"
                allow = ["personality", { name = "socket", args = [{ index = 0, op = "eq", value = 1 }] }]
                deny = ["mkdir", { name = "kill", errno = "ESRCH" }]
                [capabilities]
                keep = ["cap_net_bind_service"]
                """
        ])
        let policy = try folder.load("p.toml")
        let image = try TestSandbox.image("busybox")
        let refused = #expect(throws: PolicyError.self) {
            try policy.spec(image: image, dataDirectory: "/tmp")
        }
        #expect(refused?.key == "filesystem.mounts[0].source")
        #expect(refused?.reason.contains("not below a directory the operator allows for binds") == true)
        let noData = #expect(throws: PolicyError.self) {
            try policy.spec(image: image, host: .init(bindSources: ["/etc"]))
        }
        #expect(noData?.key == "filesystem.data_dir")

        let spec = try policy.spec(image: image, host: .init(bindSources: ["/etc"]), dataDirectory: "/tmp")
        #expect(spec.command == ["sh", "-c", "true"])
        #expect(spec.uid == 1000)
        #expect(spec.umask == 0o077)
        #expect(spec.rlimits.contains(Rlimit(.nofile, 64)))
        #expect(spec.rlimits.contains(Rlimit(.nproc, 100)))
        #expect(spec.rlimits.contains(Rlimit(.core, 0)))
        #expect(spec.rlimits.contains(Rlimit(.realtimePriority, 0)), "no real-time scheduling")
        #expect(spec.limits.memoryMax == .mebibytes(64))
        #expect(spec.limits.cpu == 0.5)
        #expect(spec.wallTimeout == .seconds(90))
        #expect(spec.keepCapabilities == [.netBindService])
        #expect(
            spec.mounts == [
                .bind(source: "/etc", target: "/host-etc", readOnly: true), .tmpfs(target: "/scratch", size: .mebibytes(8)),
                .bind(source: "/tmp", target: "/data", readOnly: false),
            ])
        #expect(spec.seccomp.defaultErrno == EACCES)
        #expect(spec.seccomp.allowed.contains("personality"))
        #expect(spec.seccomp.conditionalAllows.contains { $0.syscall == "socket" })
        #expect(!spec.seccomp.allowed.contains("mkdir"))
        #expect(spec.seccomp.errnos["mkdir"] == EACCES)
        #expect(spec.seccomp.errnos["kill"] == ESRCH)
    }

    @Test("an OCI profile: allow entries, capability-conditioned entries skipped, masked comparisons, errno entries")
    func ociProfile() throws {
        let folder = try PolicyFolder([
            "profile.json": """
                {
                  "defaultAction": "SCMP_ACT_ERRNO",
                  "defaultErrnoRet": 38,
                  "architectures": ["SCMP_ARCH_X86_64"],
                  "syscalls": [
                    {"names": ["read", "write", "exit_group", "mount", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
                  ]
                }
                """,
            "p.toml": """
                [seccomp]
                base = "profile.json"
                """,
        ])
        let policy = try folder.load("p.toml")
        let profile = try policy.spec(image: try TestSandbox.image("busybox"), command: ["true"]).seccomp
        #expect(profile.allowed == ["read", "write", "exit_group", "mount"])
        #expect(profile.defaultErrno == 38)
        #expect(profile.errnos["mkdir"] == 13)
        #expect(profile.conditionalAllows.contains { $0.syscall == "personality" && $0.conditions == [.init(argument: 0, mask: ~0, value: 8)] })
        #expect(profile.conditionalAllows.contains { $0.syscall == "clone" && $0.conditions == [.init(argument: 0, mask: 2_114_060_288, value: 0)] })
        #expect(!profile.allowed.contains("chroot"), "capability-conditioned entries are skipped")
        // "mount" is in the allowed set of the data, but compile() refuses the must-block set.
        #expect(SeccompProfile.mustBlock.contains("mount"))
    }

    @Test("every malformed policy in the corpus gives its exact error", arguments: Corpus.cases())
    func corpus(_ name: String) throws {
        let expected = try #require(Corpus.expectation(of: name), "\(name) has no '# expect:' line")
        let error = #expect(throws: PolicyError.self) {
            try PolicyLoader(directory: Corpus.directory).load(path: Corpus.directory + "/" + name)
        }
        let message = error.map {
            $0.description.replacing(Corpus.directory + "/" + name, with: "FILE").replacing(
                Corpus.directory + "/", with: "CORPUS/")
        }
        #expect(message == expected)
    }
}

/// Tests/HangarPolicyTests/Corpus: one malformed policy per file, its first line
/// `# expect: <the error, the file itself written as FILE>`.
enum Corpus {
    static let directory = TestSandbox.repositoryRoot + "/Tests/HangarPolicyTests/Corpus"

    static func cases() -> [String] {
        entries(of: directory).filter { $0.hasSuffix(".toml") }
    }

    static func expectation(of name: String) -> String? {
        guard let text = readFile(directory + "/" + name), text.hasPrefix("# expect: ") else { return nil }
        return String(text.dropFirst("# expect: ".count).prefix(while: { $0 != "\n" }))
    }
}
