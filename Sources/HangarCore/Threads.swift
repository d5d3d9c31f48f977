import Glibc

/// Runs `body` on a new detached pthread: for blocking work that must stay off Swift's
/// cooperative pool (epoll waits, namespace creation). Returns 0 or the pthread errno.
public func startThread(_ body: @escaping @Sendable () -> Void) -> Int32 {
    let box = Unmanaged.passRetained(ThreadBody(body))
    var thread = pthread_t()
    let started = pthread_create(
        &thread, nil,
        { opaque in
            Unmanaged<ThreadBody>.fromOpaque(opaque!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
    if started == 0 {
        pthread_detach(thread)
    } else {
        box.release()
    }
    return started
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}
