import CShims
import Glibc

/// A pipe for splice: its two ends and what it holds at most.
struct Pipe {
    var read: Int32
    var write: Int32
    var capacity: Int32

    /// A new pipe of about `size` bytes, or nil (out of descriptors).
    init?(size: Int32) {
        var fds: [Int32] = [-1, -1]
        let capacity = fds.withUnsafeMutableBufferPointer { hg_pipe_open($0.baseAddress, size) }
        guard capacity > 0 else { return nil }
        (read, write, self.capacity) = (fds[0], fds[1], capacity)
    }

    func close() {
        Glibc.close(read)
        Glibc.close(write)
    }
}

/// One message body (or, until the source ends, one direction of a tunnel) on its way from one socket to another, moved with splice and never
/// read, except a chunked body's size lines, which are peeked at (left in the socket, then
/// spliced on with the data) so that the proxy knows where the body ends.
struct BodyPump {
    enum Outcome: Equatable {
        /// The body has been passed on whole.
        case done
        /// Waiting for one of the sockets.
        case blocked
        /// Moved its share for this turn; call again.
        case more
        /// The source ended before the body did.
        case cutShort
        case failed(Int32)
        case malformed(HeadError)
    }

    var flow: hg_flow
    let capacity: Int32
    var framer: ChunkedFramer?
    /// Chunk data in the flow now, reported to the framer once moved.
    var passing: Int64 = 0
    /// The body ends when the source does (a response without a length).
    let untilEnd: Bool

    /// A pump of a body framed by `framing`; a malformed one is refused with `status`. A
    /// client's chunked body has its trailers guarded (`ChunkedFramer`).
    init(_ framing: BodyFraming, from: Int32, to: Int32, pipe: Pipe, refusingWith status: Int, fromClient: Bool = false) {
        flow = hg_flow(
            from: from, to: to, pipe_read: pipe.read, pipe_write: pipe.write, buffered: 0, remaining: 0, moved: 0)
        capacity = pipe.capacity
        untilEnd = framing == .untilClose
        switch framing {
        case .none: break
        case .length(let length): flow.remaining = length
        case .chunked: framer = ChunkedFramer(refusingWith: status, guardingTrailers: fromClient)
        case .untilClose: flow.remaining = -1
        }
    }

    /// Bytes written to the destination so far.
    var moved: Int64 { flow.moved }

    mutating func run(scratch: UnsafeMutablePointer<UInt8>) -> Outcome {
        while true {
            if flow.remaining != 0 || flow.buffered > 0 {
                switch hg_flow_run(&flow, capacity) {
                case Int32(HG_FLOW_DONE.rawValue): break
                case Int32(HG_FLOW_READ.rawValue), Int32(HG_FLOW_WRITE.rawValue): return .blocked
                case Int32(HG_FLOW_MORE.rawValue): return .more
                case Int32(HG_FLOW_EOF.rawValue): return untilEnd ? .done : .cutShort
                case let error: return .failed(-error)
                }
            }
            guard var framer else { return .done }
            defer { self.framer = framer }
            if passing > 0 {
                framer.passed(passing)
                passing = 0
            }
            switch framer.step {
            case .done:
                return .done
            case .pass(let count):
                flow.remaining = count
                passing = count
            case .read:
                let peeked = hg_peek(flow.from, scratch, 4096)
                if peeked == -Int(EAGAIN) { return .blocked }
                if peeked == 0 { return .cutShort }
                if peeked < 0 { return .failed(Int32(-peeked)) }
                do {
                    let used = try framer.consume(UnsafeBufferPointer(start: scratch, count: peeked))
                    flow.remaining = Int64(used)
                } catch {
                    return .malformed(error)
                }
            }
        }
    }
}
