// Package pcapng writes and reads the pcapng capture format
// (draft-ietf-opsawg-pcapng) as far as `nodegress trace --pcap` needs it: a
// section header, one interface description per interface, with its name
// and nanosecond timestamps, and enhanced packet blocks with a comment
// (opt_comment) each. tcpdump and Wireshark read what Writer writes; Reader
// reads it back, skipping blocks of other kinds.
package pcapng

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Block types.
const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockEPB = 0x00000006
)

// Option codes.
const (
	optEnd       = 0
	optComment   = 1
	optShbUserAp = 4 // shb_userappl
	optIfName    = 2 // if_name
	optIfTsresol = 9 // if_tsresol
)

const byteOrderMagic = 0x1A2B3C4D

// LinkTypeEthernet is LINKTYPE_ETHERNET: frames from their Ethernet header.
const LinkTypeEthernet = 1

// maxOption is the most bytes an option's value can hold (16-bit length).
const maxOption = 0xffff

// Interface describes one capture interface.
type Interface struct {
	Name     string
	LinkType uint16
	// Snaplen is the most bytes of a packet the capture keeps; 0 means
	// no limit.
	Snaplen uint32
}

// Packet is one captured packet.
type Packet struct {
	// Interface is the ID AddInterface returned.
	Interface uint32
	Time      time.Time
	// Data is the captured bytes; OrigLen the packet's length on the
	// wire (at least len(Data)).
	Data    []byte
	OrigLen uint32
	// Comment is stored as opt_comment; empty for none.
	Comment string
}

// Writer writes one pcapng section. It is not safe for concurrent use.
type Writer struct {
	w      io.Writer
	ifaces uint32
	buf    []byte
}

// NewWriter writes a section header naming app as the writing application
// and returns a Writer that adds blocks to it.
func NewWriter(w io.Writer, app string) (*Writer, error) {
	pw := &Writer{w: w}
	b := pw.begin(blockSHB)
	b = binary.LittleEndian.AppendUint32(b, byteOrderMagic)
	b = binary.LittleEndian.AppendUint16(b, 1) // major version
	b = binary.LittleEndian.AppendUint16(b, 0) // minor version
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0))
	var err error
	if b, err = appendOption(b, optShbUserAp, []byte(app)); err != nil {
		return nil, err
	}
	if err := pw.end(b, true); err != nil {
		return nil, err
	}
	return pw, nil
}

// AddInterface writes an interface description and returns the ID packets
// of that interface refer to.
func (w *Writer) AddInterface(ifc Interface) (uint32, error) {
	b := w.begin(blockIDB)
	b = binary.LittleEndian.AppendUint16(b, ifc.LinkType)
	b = binary.LittleEndian.AppendUint16(b, 0) // reserved
	b = binary.LittleEndian.AppendUint32(b, ifc.Snaplen)
	var err error
	if ifc.Name != "" {
		if b, err = appendOption(b, optIfName, []byte(ifc.Name)); err != nil {
			return 0, err
		}
	}
	// Timestamps in nanoseconds (10^-9), as the datapath takes them.
	if b, err = appendOption(b, optIfTsresol, []byte{9}); err != nil {
		return 0, err
	}
	if err := w.end(b, true); err != nil {
		return 0, err
	}
	id := w.ifaces
	w.ifaces++
	return id, nil
}

// WritePacket writes an enhanced packet block.
func (w *Writer) WritePacket(p Packet) error {
	if p.Interface >= w.ifaces {
		return fmt.Errorf("packet of interface %d: only %d interfaces described", p.Interface, w.ifaces)
	}
	if p.OrigLen < uint32(len(p.Data)) {
		return fmt.Errorf("packet of %d bytes captured from %d on the wire", len(p.Data), p.OrigLen)
	}
	ts := p.Time.UnixNano()
	if ts < 0 {
		return fmt.Errorf("packet time %s: before 1970", p.Time)
	}
	b := w.begin(blockEPB)
	b = binary.LittleEndian.AppendUint32(b, p.Interface)
	b = binary.LittleEndian.AppendUint32(b, uint32(uint64(ts)>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ts))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Data)))
	b = binary.LittleEndian.AppendUint32(b, p.OrigLen)
	b = appendPadded(b, p.Data)
	if p.Comment != "" {
		var err error
		if b, err = appendOption(b, optComment, []byte(p.Comment)); err != nil {
			return err
		}
	}
	return w.end(b, p.Comment != "")
}

// begin starts a block in the writer's buffer, its length to be filled in
// by end.
func (w *Writer) begin(typ uint32) []byte {
	b := binary.LittleEndian.AppendUint32(w.buf[:0], typ)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// end closes the option list (when there is one), sets both length fields
// and writes the block.
func (w *Writer) end(b []byte, options bool) error {
	if options {
		b = binary.LittleEndian.AppendUint32(b, optEnd) // code and length 0
	}
	n := uint32(len(b) + 4)
	binary.LittleEndian.PutUint32(b[4:], n)
	b = binary.LittleEndian.AppendUint32(b, n)
	w.buf = b
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("write pcapng block: %w", err)
	}
	return nil
}

var errOptionTooLong = errors.New("pcapng option longer than 65535 bytes")

func appendOption(b []byte, code uint16, v []byte) ([]byte, error) {
	if len(v) > maxOption {
		return b, errOptionTooLong
	}
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return appendPadded(b, v), nil
}

// appendPadded appends v and zeros up to a multiple of 4 bytes; every
// block starts at offset 0 of b and all fixed fields are 32-bit multiples,
// so b's length tells the padding.
func appendPadded(b, v []byte) []byte {
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
