package pcapng

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxBlock bounds the blocks Reader accepts, so a corrupt length cannot
// make it allocate without limit.
const maxBlock = 16 << 20

// Reader reads the packets of a pcapng stream.
type Reader struct {
	r      io.Reader
	order  binary.ByteOrder
	ifaces []Interface
	// units is each interface's timestamp unit.
	units []time.Duration
}

// NewReader reads the section header of r.
func NewReader(r io.Reader) (*Reader, error) {
	pr := &Reader{r: r}
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read pcapng section header: %w", err)
	}
	if binary.LittleEndian.Uint32(hdr[:]) != blockSHB {
		return nil, errors.New("not pcapng: no section header block")
	}
	if err := pr.section(hdr); err != nil {
		return nil, err
	}
	return pr, nil
}

// Interfaces returns the interfaces described so far in this section, by ID.
func (r *Reader) Interfaces() []Interface { return r.ifaces }

// section reads the rest of a section header block whose first 12 bytes
// are hdr, and starts a new section.
func (r *Reader) section(hdr [12]byte) error {
	switch {
	case binary.LittleEndian.Uint32(hdr[8:]) == byteOrderMagic:
		r.order = binary.LittleEndian
	case binary.BigEndian.Uint32(hdr[8:]) == byteOrderMagic:
		r.order = binary.BigEndian
	default:
		return errors.New("pcapng section header: bad byte-order magic")
	}
	body, err := r.body(r.order.Uint32(hdr[4:]), 12)
	if err != nil {
		return fmt.Errorf("pcapng section header: %w", err)
	}
	if len(body) < 12 {
		return errors.New("pcapng section header: too short")
	}
	if major := r.order.Uint16(body); major != 1 {
		return fmt.Errorf("pcapng version %d: want 1", major)
	}
	r.ifaces, r.units = nil, nil
	return nil
}

// body reads the rest of a block of total length n of which read bytes
// are already read, checks the trailing length and returns what lies
// between the fixed header and it.
func (r *Reader) body(n uint32, read int) ([]byte, error) {
	if n%4 != 0 || int(n) < read+4 || n > maxBlock {
		return nil, fmt.Errorf("bad block length %d", n)
	}
	b := make([]byte, int(n)-read)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, fmt.Errorf("read block: %w", noEOF(err))
	}
	if r.order.Uint32(b[len(b)-4:]) != n {
		return nil, errors.New("block lengths differ")
	}
	return b[:len(b)-4], nil
}

// Next returns the next packet, io.EOF at the end of the stream.
func (r *Reader) Next() (Packet, error) {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return Packet{}, io.EOF
			}
			return Packet{}, fmt.Errorf("read pcapng block: %w", noEOF(err))
		}
		typ := r.order.Uint32(hdr[:])
		if binary.LittleEndian.Uint32(hdr[:]) == blockSHB {
			var full [12]byte
			copy(full[:], hdr[:])
			if _, err := io.ReadFull(r.r, full[8:]); err != nil {
				return Packet{}, fmt.Errorf("read pcapng section header: %w", noEOF(err))
			}
			if err := r.section(full); err != nil {
				return Packet{}, err
			}
			continue
		}
		body, err := r.body(r.order.Uint32(hdr[4:]), 8)
		if err != nil {
			return Packet{}, fmt.Errorf("pcapng block type %#x: %w", typ, err)
		}
		switch typ {
		case blockIDB:
			if err := r.iface(body); err != nil {
				return Packet{}, err
			}
		case blockEPB:
			return r.packet(body)
		}
	}
}

func (r *Reader) iface(body []byte) error {
	if len(body) < 8 {
		return errors.New("pcapng interface description: too short")
	}
	ifc := Interface{LinkType: r.order.Uint16(body), Snaplen: r.order.Uint32(body[4:])}
	unit := time.Microsecond
	err := r.options(body[8:], func(code uint16, v []byte) error {
		switch code {
		case optIfName:
			ifc.Name = string(v)
		case optIfTsresol:
			if len(v) != 1 || v[0]&0x80 != 0 || v[0] > 9 {
				return fmt.Errorf("if_tsresol %x: only 10^-0 to 10^-9 are supported", v)
			}
			unit = time.Second
			for range v[0] {
				unit /= 10
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pcapng interface description: %w", err)
	}
	r.ifaces = append(r.ifaces, ifc)
	r.units = append(r.units, unit)
	return nil
}

func (r *Reader) packet(body []byte) (Packet, error) {
	if len(body) < 20 {
		return Packet{}, errors.New("pcapng packet: too short")
	}
	p := Packet{
		Interface: r.order.Uint32(body),
		OrigLen:   r.order.Uint32(body[16:]),
	}
	if int(p.Interface) >= len(r.ifaces) {
		return Packet{}, fmt.Errorf("pcapng packet: interface %d not described", p.Interface)
	}
	ts := uint64(r.order.Uint32(body[4:]))<<32 | uint64(r.order.Uint32(body[8:]))
	p.Time = time.Unix(0, 0).Add(time.Duration(ts) * r.units[p.Interface])
	capLen := r.order.Uint32(body[12:])
	padded := (uint64(capLen) + 3) &^ 3
	if padded > uint64(len(body)-20) {
		return Packet{}, fmt.Errorf("pcapng packet: %d captured bytes in a block of %d", capLen, len(body))
	}
	p.Data = body[20 : 20+capLen]
	err := r.options(body[20+padded:], func(code uint16, v []byte) error {
		if code == optComment {
			p.Comment = string(v)
		}
		return nil
	})
	if err != nil {
		return Packet{}, fmt.Errorf("pcapng packet: %w", err)
	}
	return p, nil
}

// options calls fn for each option of b up to opt_endofopt or b's end.
func (r *Reader) options(b []byte, fn func(code uint16, v []byte) error) error {
	for len(b) >= 4 {
		code, n := r.order.Uint16(b), int(r.order.Uint16(b[2:]))
		if code == optEnd {
			return nil
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(b) {
			return fmt.Errorf("option %d of %d bytes overruns its block", code, n)
		}
		if err := fn(code, b[4:4+n]); err != nil {
			return err
		}
		b = b[4+padded:]
	}
	if len(b) != 0 {
		return errors.New("trailing bytes after the options")
	}
	return nil
}

// noEOF turns an end of stream inside a block into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
