import CShims
import Glibc
import HangarCore
import Synchronization

/// Network namespaces made ahead of spawns (see CShims/netns.c): creating one is among
/// the most expensive steps of a spawn, and nothing about it depends on the sandbox.
final class NetworkNamespacePool: Sendable {
    private let target: Int
    private let state = Mutex<(ready: [Int32], refilling: Bool)>(([], false))

    init(size: Int) { target = max(0, size) }

    /// How many are ready now.
    var count: Int { state.withLock { $0.ready.count } }

    /// A ready namespace (its fd now belongs to the caller), or nil when the pool is empty
    /// (the spawning thread then makes one). The pool is topped up in the background.
    func take() -> Int32? {
        let (taken, startRefill) = state.withLock { state -> (Int32?, Bool) in
            let fd = state.ready.popLast()
            let start = !state.refilling && target > 0
            if start { state.refilling = true }
            return (fd, start)
        }
        // Creating a namespace blocks for about half a millisecond: on a thread of its own.
        if startRefill && startThread({ self.refill() }) != 0 {
            state.withLock { $0.refilling = false }
        }
        return taken
    }

    private func refill() {
        while true {
            let needed = state.withLock { state -> Bool in
                if state.ready.count >= target {
                    state.refilling = false
                    return false
                }
                return true
            }
            guard needed else { return }
            let fd = hg_netns_create()
            guard fd >= 0 else {
                state.withLock { $0.refilling = false }
                return
            }
            state.withLock { $0.ready.append(fd) }
        }
    }

    deinit {
        state.withLock { $0.ready.forEach { close($0) } }
    }
}
