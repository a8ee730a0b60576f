// Package handover passes the proxy's listening sockets from a running
// agent to the one replacing it, and keeps them in a separate process while
// the agent itself restarts, so that no connection to the node's ingress
// addresses is refused while an agent is replaced.
//
// Both are small protocols over a unix SOCK_SEQPACKET socket: each message
// is one JSON object, and listening sockets travel as SCM_RIGHTS. The
// sockets are shared, not copied: while two agents hold one, the kernel
// gives each new connection to one of them, and its accept queue outlives
// either process as long as one descriptor is open somewhere.
package handover

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxListeners bounds how many sockets one message may carry.
const maxListeners = 16

// message is one protocol message.
type message struct {
	Op string `json:"op"`
	// Names of the listeners whose descriptors the message carries, in
	// order.
	Names []string `json:"names,omitempty"`
	// Error is why a request was refused; Retry says the refusal is
	// temporary (the agent is busy with another takeover).
	Error string `json:"error,omitempty"`
	Retry bool   `json:"retry,omitempty"`
	// PID of the sender, for logs.
	PID int `json:"pid,omitempty"`
}

// Operations.
const (
	opTakeover  = "takeover"  // successor → agent (+ its network namespace)
	opListeners = "listeners" // agent → successor, keeper → agent (+ sockets)
	opServing   = "serving"   // successor → agent: stop accepting and drain
	opRefused   = "refused"   // either way: Error says why
	opStore     = "store"     // agent → keeper (+ sockets)
	opStored    = "stored"    // keeper → agent
	opFetch     = "fetch"     // agent → keeper
)

// ErrNoPeer means nothing listens on the socket: no agent runs (or no
// keeper), which is the normal case at a node's first start.
var ErrNoPeer = errors.New("nothing listening")

// ErrBusy means the agent cannot hand over now (it is handing over to
// another); asking again later may succeed.
var ErrBusy = errors.New("busy")

func dial(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s: %w", path, ErrNoPeer)
		}
		return nil, fmt.Errorf("connect %s: %w", path, err)
	}
	return c, nil
}

// listen binds path, replacing a socket file left by a process that is
// gone (or that handed its place over).
func listen(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale %s: %w", path, err)
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// Closing the listener must not remove a file a successor bound.
	l.SetUnlinkOnClose(false)
	return l, nil
}

// send writes m with files as SCM_RIGHTS.
func send(c *net.UnixConn, m message, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, 0, len(files))
		defer func() {
			for _, fd := range fds {
				_ = unix.Close(fd)
			}
		}()
		for _, f := range files {
			fd, err := dupFd(f)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", m.Op, err)
	}
	return nil
}

// receive reads one message and the descriptors that came with it, as
// files. Descriptors beyond maxListeners, or arriving with a malformed
// message, are closed.
func receive(c *net.UnixConn) (message, []*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*maxListeners))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, nil, err
	}
	if n == 0 && oobn == 0 {
		return message{}, nil, errors.New("peer closed the connection")
	}
	files, ferr := parseRights(oob[:oobn])
	if flags&unix.MSG_CTRUNC != 0 && ferr == nil {
		ferr = errors.New("too many descriptors")
	}
	var m message
	if ferr == nil {
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			ferr = fmt.Errorf("malformed message: %w", err)
		}
	}
	if ferr != nil {
		closeAll(files)
		return message{}, nil, ferr
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var files []*os.File
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// named pairs the names of a listeners message with its descriptors, which
// must be listening TCP sockets.
func named(m message, files []*os.File) (map[string]*os.File, error) {
	if len(m.Names) != len(files) {
		closeAll(files)
		return nil, fmt.Errorf("%d names for %d sockets", len(m.Names), len(files))
	}
	out := make(map[string]*os.File, len(files))
	for i, f := range files {
		err := checkListening(f)
		if err == nil && out[m.Names[i]] != nil {
			err = errors.New("named twice")
		}
		if err != nil {
			closeAll(files)
			return nil, fmt.Errorf("listener %q: %w", m.Names[i], err)
		}
		out[m.Names[i]] = f
	}
	return out, nil
}

// dupFd duplicates f's descriptor without f.Fd(), which would switch the
// shared file description, and so the agent's own listener, to blocking.
func dupFd(f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup: %w", dupErr)
	}
	return fd, nil
}

func checkListening(f *os.File) error {
	fd, err := dupFd(f)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || typ != unix.SOCK_STREAM || listening != 1 {
		return errors.New("not a listening stream socket")
	}
	return nil
}

// sortedNames returns the names and files of ls in name order.
func sortedNames(ls map[string]*os.File) ([]string, []*os.File) {
	names := make([]string, 0, len(ls))
	for n := range ls {
		names = append(names, n)
	}
	slices.Sort(names)
	files := make([]*os.File, len(names))
	for i, n := range names {
		files[i] = ls[n]
	}
	return names, files
}

// peerIsRoot reports whether the process at the other end of c runs as
// root or as this process's user: the sockets handed over carry all of the
// node's ingress traffic.
func peerIsRoot(c *net.UnixConn) (bool, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return false, err
	}
	if credErr != nil {
		return false, credErr
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Getuid(), nil
}

// sameNetns reports whether the namespace file f is this process's network
// namespace: agents of different nodes (network namespaces) must never
// take each other's sockets.
func sameNetns(f *os.File) (bool, error) {
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &theirs); err != nil { // a namespace file: blocking is fine
		return false, err
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		return false, err
	}
	return theirs.Dev == ours.Dev && theirs.Ino == ours.Ino, nil
}
