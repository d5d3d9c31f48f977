import CShims
import Glibc
import HangarCore
import HangarSandbox
import HangarTestSupport
import Testing

/// Resource limits on this host's real cgroups (v1 here), rlimits, Landlock, and how a
/// sandbox ends. Timings are bounds wide enough for a loaded 2-core machine: they tell a
/// limit that works from one that does not, nothing finer.
@Suite("Limits and outcomes", .serialized, .timeLimit(.minutes(3)))
struct LimitsTests {
    let before = HostState.capture()

    @Test("a memory hog ends as oom, with its peak at the limit, while a sibling sandbox keeps running")
    func memoryHog() async throws {
        let sibling = try await TestSandbox.start(try TestSandbox.shell("echo alive; while :; do sleep 0.1; done"))
        var hog = try TestSandbox.shell("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
        hog.limits.memoryMax = .mebibytes(32)
        let result = try await TestSandbox.run(hog)
        #expect(result.outcome.reason == .oom, "\(result.outcome)")
        #expect(!result.stdout.contains("survived"))
        let peak = try #require(result.outcome.peakMemory)
        #expect(peak <= .mebibytes(33) && peak >= .mebibytes(16), "peak \(peak)")
        #expect(kill(sibling.sandbox.pid, 0) == 0, "the sibling still runs")
        sibling.sandbox.kill()
        let siblingResult = try await sibling.finish()
        #expect(siblingResult.stdout == "alive\n")
        #expect(siblingResult.outcome.reason == .killed)
        await expectHostRestored(before)
    }

    @Test("a fork bomb is held at pids_max, and the host can still fork meanwhile")
    func forkBomb() async throws {
        // The bomb runs in a subshell (a failed fork ends a non-interactive shell); the
        // outer shell then blocks on a FIFO without forking, until the test kills it.
        var spec = try TestSandbox.shell(
            """
            mkfifo /tmp/hold
            (i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null
            read x < /tmp/hold
            """)
        spec.limits.pidsMax = 24
        let started = try await TestSandbox.start(spec)
        let pids = try #require(HostState.cgroupDirectory(controller: "pids", sandbox: started.sandbox.id.rawValue))
        var events = ""
        var current: Int?
        for _ in 0..<200 {
            events = readFile(pids + "/pids.events") ?? "gone"
            current = Int((readFile(pids + "/pids.current") ?? "").trimmingCharacters(in: "\n"))
            if events.hasPrefix("max ") && !events.hasSuffix("max 0\n") { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let current else {
            started.sandbox.kill()
            let result = try await started.finish()
            Issue.record("the sandbox's pids group is gone: \(result.outcome) \(result.stderr)")
            return
        }
        #expect(current <= 24, "tasks in the sandbox: \(current)")
        #expect(!events.hasSuffix("max 0\n"), "forks beyond pids_max were refused: \(events)")
        // While the bomb holds its pids, the host forks as usual.
        var pid: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        #expect(posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(status == 0)
        started.sandbox.kill()
        _ = try await started.finish()
        await expectHostRestored(before)
    }

    @Test("a thread bomb is held at pids_max")
    func threadBomb() async throws {
        var spec = SandboxSpec(
            image: try TestSandbox.image("python"),
            command: [
                "python3", "-c",
                """
                import os, threading, time
                n = 0
                try:
                    while n < 1000:
                        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                        n += 1
                except RuntimeError:
                    pass
                print(n, flush=True)
                os._exit(0)
                """,
            ])
        spec.limits.pidsMax = 32
        let result = try await TestSandbox.run(spec)
        let threads = Int(result.stdout.trimmingCharacters(in: "\n")) ?? 999
        #expect(threads < 32 && threads >= 20, "\(result.stdout) \(result.stderr)")
        await expectHostRestored(before)
    }

    @Test("CPU spinning on four processes stays near a quota of half a core")
    func cpuQuota() async throws {
        let script = "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 2"
        var limited = try TestSandbox.shell(script)
        limited.limits.cpu = 0.5
        let quota = try await TestSandbox.run(limited).outcome
        // The same with a cgroup (for its CPU time) and no quota.
        var unlimited = try TestSandbox.shell(script)
        unlimited.limits.cpuWeight = 100
        let free = try await TestSandbox.run(unlimited).outcome
        let limitedRatio = try ratio(quota)
        let freeRatio = try ratio(free)
        #expect(limitedRatio > 0.2 && limitedRatio < 0.8, "cpu/wall with a quota of 0.5: \(limitedRatio)")
        #expect(freeRatio > limitedRatio * 1.5, "without a quota: \(freeRatio)")
        await expectHostRestored(before)
    }

    private func ratio(_ outcome: Outcome) throws -> Double {
        let cpu = try #require(outcome.cpuTime, "the cgroup reports CPU time")
        return seconds(cpu) / max(0.001, seconds(outcome.wallTime))
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    @Test("a tmpfs mount and the upper layer give ENOSPC at their size; the host's disk is untouched")
    func sizeLimits() async throws {
        var spec = try TestSandbox.shell(
            """
            dd if=/dev/zero of=/scratch/fill bs=1M count=16 2>&1 | grep -o 'No space left on device'
            dd if=/dev/zero of=/fill bs=1M count=16 2>&1 | grep -o 'No space left on device'
            """)
        spec.mounts = [.tmpfs(target: "/scratch", size: .mebibytes(4))]
        spec.upperSize = .mebibytes(4)
        let disk = diskFree("/")
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "No space left on device\nNo space left on device\n", "\(result.stderr)")
        #expect(abs(diskFree("/") - disk) < 8 << 20, "host disk use changed")
        await expectHostRestored(before)
    }

    @Test("an upper layer on disk gives ENOSPC at its size, and leaves no file and no loop device")
    func diskUpper() async throws {
        var spec = try TestSandbox.shell(
            """
            grep -c ' / overlay ' /proc/mounts
            dd if=/dev/zero of=/fill bs=1M count=32 2>&1 | grep -o 'No space left on device'
            """)
        spec.upper = .disk
        spec.upperSize = .mebibytes(8)
        spec.upperInodes = 1024
        let loopsBefore = loopDevicesBacked(by: "/var/lib/hangar/uppers")
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "1\nNo space left on device\n", "\(result.stderr)")
        #expect(entries(of: "/var/lib/hangar/uppers").isEmpty, "no file is left")
        var loops = loopDevicesBacked(by: "/var/lib/hangar/uppers")
        for _ in 0..<100 where loops != loopsBefore {
            try await Task.sleep(for: .milliseconds(20))
            loops = loopDevicesBacked(by: "/var/lib/hangar/uppers")
        }
        #expect(loops == loopsBefore, "the loop device detached itself")
        await expectHostRestored(before)
    }

    /// Loop devices whose backing file is (or was) in `directory`.
    private func loopDevicesBacked(by directory: String) -> [String] {
        entries(of: "/sys/block").filter { $0.hasPrefix("loop") }.filter { device in
            (readFile("/sys/block/\(device)/loop/backing_file") ?? "").hasPrefix(directory)
        }
    }

    @Test("creating files past the inode limit gives ENOSPC")
    func inodeLimit() async throws {
        var spec = try TestSandbox.shell(
            "i=0; while touch /f$i 2>/dev/null; do i=$((i+1)); done; echo $i; touch /last 2>&1 | grep -o 'No space left on device'")
        spec.upperInodes = 200
        let result = try await TestSandbox.run(spec)
        let lines = result.stdout.split(separator: "\n")
        let created = Int(lines.first ?? "") ?? 0
        #expect(created > 100 && created < 200, "\(result.stdout)")
        #expect(lines.last == "No space left on device")
        await expectHostRestored(before)
    }

    @Test("wall_timeout kills the whole tree")
    func wallTimeout() async throws {
        var spec = try TestSandbox.shell("(setsid sleep 100 &); sleep 100 & sleep 100")
        spec.wallTimeout = .seconds(1)
        let result = try await TestSandbox.run(spec)
        #expect(result.outcome.reason == .wallTimeout)
        #expect(result.outcome.wallTime < .seconds(10))
        #expect(result.status == .signaled(SIGKILL))
        await expectHostRestored(before)
    }

    @Test("fd exhaustion gives EMFILE at the nofile rlimit; core dumps are off")
    func fileLimit() async throws {
        var spec = SandboxSpec(
            image: try TestSandbox.image("python"),
            command: [
                "python3", "-c",
                """
                import os, resource
                fds = []
                try:
                    while True:
                        fds.append(os.open('/dev/null', os.O_RDONLY))
                except OSError as e:
                    print(e.errno, len(fds), resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE))
                """,
            ])
        spec.rlimits = [Rlimit(.nofile, 32), Rlimit(.core, 0)]
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "\(EMFILE) 29 (32, 32) (0, 0)\n", "\(result.stderr)")
        await expectHostRestored(before)
    }

    @Test("umask, a kept capability, and a read-write bind whose files belong to the bind owner on disk")
    func identityAndBinds() async throws {
        var template = Array("/tmp/hangar-bind-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer {
            unlink(directory + "/made")
            rmdir(directory)
        }
        // Read-write bind sources belong to the bind owner (900000000 + k on disk is uid k inside).
        try #require(chown(directory, 900_001_000, 900_001_000) == 0)  // uid 1000 inside
        var spec = try TestSandbox.shell(
            """
            umask; touch /data/made && stat -c '%u %a' /data/made
            grep -E '^Cap(Eff|Amb):' /proc/self/status | tr -s '\\t' ' '
            (echo x > /etc-ro/hostname) 2>&1 | grep -o 'Read-only file system'
            """)
        spec.umask = 0o027
        spec.uid = 1000
        spec.gid = 1000
        spec.keepCapabilities = [.netBindService]
        spec.mounts = [
            .bind(source: directory, target: "/data", readOnly: false),
            .bind(source: "/etc", target: "/etc-ro", readOnly: true),
        ]
        let result = try await TestSandbox.run(spec)
        var st = stat()
        #expect(stat(directory + "/made", &st) == 0)
        #expect(st.st_uid == 900_001_000 && st.st_gid == 900_001_000, "on disk: \(st.st_uid):\(st.st_gid), never host root")
        let capability = String(1 << 10, radix: 16).leftPadded(to: 16)
        #expect(
            result.stdout == "0027\n1000 640\nCapEff: \(capability)\nCapAmb: \(capability)\nRead-only file system\n",
            "\(result.stderr)")
        await expectHostRestored(before)
    }

    @Test("mounts made below a host bind stay in the sandbox; a read-write file bind is writable under Landlock")
    func bindPropagationAndFileBind() async throws {
        var template = Array("/tmp/hangar-bind-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        mkdir(directory + "/tmp", 0o755)
        let file = directory + "/data.txt"
        let fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        close(fd)
        try #require(chown(file, 900_000_000, 900_000_000) == 0)  // root inside
        defer {
            unlink(file)
            rmdir(directory + "/tmp")
            rmdir(directory)
        }
        var spec = try TestSandbox.shell(
            "grep -c ' /app/tmp ' /proc/self/mountinfo; echo written > /data.txt && echo file-ok; grep -c shared: /proc/self/mountinfo")
        spec.mounts = [
            .bind(source: directory, target: "/app", readOnly: true), .tmpfs(target: "/app/tmp", size: .mebibytes(1)),
            .bind(source: file, target: "/data.txt", readOnly: false),
        ]
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "1\nfile-ok\n0\n", "\(result.stdout)\(result.stderr)")
        #expect(readFile(file) == "written\n")
        // The tmpfs mounted at /app/tmp never showed up at the bind's source on the host.
        let hostMounts = readFile("/proc/self/mountinfo") ?? ""
        #expect(!hostMounts.contains(directory), "a sandbox mount propagated to the host")
        await expectHostRestored(before)
    }

    @Test("Landlock: with a read-only root, writes outside /dev and the read-write mounts are refused")
    func landlock() async throws {
        var spec = try TestSandbox.shell(
            """
            (echo x > /proc/self/comm) 2>&1 | grep -o 'Permission denied'
            echo x > /scratch/ok && echo scratch-ok
            echo x > /dev/shm/ok && echo shm-ok
            """)
        spec.readOnlyRoot = true
        spec.mounts = [.tmpfs(target: "/scratch", size: .mebibytes(1))]
        let confined = try await TestSandbox.run(spec)
        #expect(confined.stdout == "Permission denied\nscratch-ok\nshm-ok\n", "\(confined.stderr)")
        spec.landlock = false
        let unconfined = try await TestSandbox.run(spec)
        #expect(unconfined.stdout == "scratch-ok\nshm-ok\n", "without Landlock the mount flags alone allow /proc/self/comm")
        await expectHostRestored(before)
    }

    @Test("every system call number, called with harmless arguments, answers as the profile says")
    func syscallSweep() async throws {
        // A distinctive errno, so that the kernel's own EPERM is not taken for the filter's.
        var profile = SeccompProfile.default
        profile.defaultErrno = EHWPOISON
        let skippedNames: [String] = ["exit", "exit_group", "rt_sigreturn", "fork", "vfork", "clone", "pause", "rt_sigsuspend"]
        var skipped = skippedNames.map { name in name.withCString { hg_seccomp_resolve($0) } }
        #if arch(x86_64)
            // uretprobe and uprobe: the kernel lets them past seccomp (they only act from a
            // probe's trampoline; called from anywhere else they raise SIGILL or fail).
            skipped += [335, 336]
        #endif
        let script = """
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            skipped = {\(skipped.map(String.init).joined(separator: ", "))}
            m = ctypes.c_long(-1)
            for nr in range(600):
                if nr in skipped:
                    continue
                ctypes.set_errno(0)
                r = libc.syscall(ctypes.c_long(nr), m, m, m, m, m, m)
                print(nr, ctypes.get_errno() if r == -1 else 0, flush=True)
            print("done", flush=True)
            """
        var spec = SandboxSpec(image: try TestSandbox.image("python"), command: ["python3", "-c", script])
        spec.seccomp = profile
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout.hasSuffix("done\n"), "\(result.stderr)")
        var answers: [Int32: Int32] = [:]
        for line in result.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, let nr = Int32(fields[0]), let err = Int32(fields[1]) { answers[nr] = err }
        }
        let guarded = Set(profile.argumentDenials.map(\.syscall) + profile.conditionalAllows.map(\.syscall))
        var checked = 0
        for nr in Int32(0)..<600 where !skipped.contains(nr) {
            guard let err = answers[nr] else {
                Issue.record("no answer for \(nr)")
                continue
            }
            guard let cName = hg_seccomp_name(nr) else {
                #expect(err == ENOSYS, "number \(nr), unknown to the profile, answered \(err)")
                continue
            }
            let name = String(cString: cName)
            free(cName)
            if SeccompProfile.mustBlock.contains(name) {
                #expect(err == EHWPOISON, "\(name) (must-block) answered \(err)")
            } else if let expected = profile.errnos[name] {
                #expect(err == expected, "\(name) answered \(err), the profile says \(expected)")
            } else if profile.allowed.contains(name) {
                #expect(err != EHWPOISON, "\(name) is allowed, and the filter refused it")
            } else if !guarded.contains(name) {
                #expect(err == EHWPOISON, "\(name) is not allowed, and it answered \(err)")
            }
            checked += 1
        }
        #expect(checked > 300)
        await expectHostRestored(before)
    }

    @Test("log_denied: a refused call is written to the kernel's audit log, and only with it")
    func logDenied() async throws {
        let mountNumber = "mount".withCString { hg_seccomp_resolve($0) }
        func audited(logging: Bool) async throws -> Bool {
            let kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            try #require(kmsg >= 0)
            defer { close(kmsg) }
            lseek(kmsg, 0, SEEK_END)
            var spec = try TestSandbox.shell("mount -t tmpfs none /mnt 2>/dev/null; echo $?")
            spec.seccomp.logDenied = logging
            let result = try await TestSandbox.run(spec)
            #expect(result.stdout != "0\n", "mount is refused")
            // One record per read; EAGAIN at the end.
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = read(kmsg, &buffer, buffer.count)
                if n < 0 && errno == EPIPE { continue }  // overwritten records
                if n <= 0 { return false }
                let record = String(decoding: buffer.prefix(n), as: UTF8.self)
                if record.contains("type=1326"), record.contains("comm=\"mount\""),
                    record.contains("syscall=\(mountNumber) ")
                {
                    return true
                }
            }
        }
        #expect(try await audited(logging: true), "the refused mount(2) is in the audit log")
        #expect(try await !audited(logging: false), "without log_denied it is not")
        await expectHostRestored(before)
    }

    @Test("a 32-bit int 0x80 system call kills the process", .enabled(if: hg_seccomp_resolve("arch_prctl") >= 0))
    func int80Killed() async throws {
        // mov eax, 20 (getpid on i386); int 0x80; ret — run from an executable mapping.
        let script = """
            import ctypes, mmap
            code = bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3])
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            address = ctypes.addressof(ctypes.c_char.from_buffer(page))
            print('before', flush=True)
            ctypes.CFUNCTYPE(ctypes.c_int)(address)()
            print('survived', flush=True)
            """
        let spec = SandboxSpec(image: try TestSandbox.image("python"), command: ["python3", "-c", script])
        let result = try await TestSandbox.run(spec)
        #expect(result.stdout == "before\n", "\(result.stderr)")
        #expect(result.status == .exited(128 + SIGSYS))
        await expectHostRestored(before)
    }
}

/// Free bytes of the file system at `path`.
func diskFree(_ path: String) -> Int64 {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return 0 }
    return Int64(st.f_bavail) * Int64(st.f_frsize)
}

