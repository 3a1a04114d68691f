private import CHiredis
internal import NIOCore

/// Encodes commands with hiredis's `redisFormatCommandArgv`, so the RESP framing is hiredis's, not ours.
enum RedisCommandEncoder {
    static func encode(_ command: RedisCommand, into buffer: inout ByteBuffer) {
        let arguments = command.arguments
        // One contiguous copy of all arguments keeps every pointer valid for the call.
        let joined = arguments.flatMap { $0 }
        let lengths = arguments.map { $0.count }
        joined.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress) ?? UnsafeRawPointer(bitPattern: 1)!
            var offset = 0
            var pointers: [UnsafePointer<CChar>?] = []
            pointers.reserveCapacity(arguments.count)
            for length in lengths {
                pointers.append((base + offset).assumingMemoryBound(to: CChar.self))
                offset += length
            }
            var target: UnsafeMutablePointer<CChar>? = nil
            let written = pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { argvlen in
                    redisFormatCommandArgv(&target, Int32(arguments.count), argv.baseAddress, argvlen.baseAddress)
                }
            }
            guard written > 0, let target else {
                preconditionFailure("hiredis could not format a command of \(arguments.count) arguments")
            }
            buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(written)))
            redisFreeCommand(target)
        }
    }
}
