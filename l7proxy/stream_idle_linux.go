package l7proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// streamProgress is how many bytes the upstream connection of a stream
// has moved both ways (received, and sent and acknowledged), read from
// the kernel: the copy itself runs in splice(2), which reports nothing
// until it ends. ok is false when it cannot be read.
func streamProgress(c net.Conn) (uint64, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || gerr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
