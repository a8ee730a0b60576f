package loader

import (
	"encoding/binary"
	"net/netip"
)

// The datapath keeps addresses and ports in network byte order. Generated Go
// mirrors hold them in plain integers, so the bytes are moved as they lie.

func addrToBE(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addrFromBE(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portToBE(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func portFromBE(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func tupleFromBPF(t datapathFlowTuple) Tuple {
	return Tuple{
		Src:   netip.AddrPortFrom(addrFromBE(t.Saddr), portFromBE(t.Sport)),
		Dst:   netip.AddrPortFrom(addrFromBE(t.Daddr), portFromBE(t.Dport)),
		Proto: Proto(t.Proto),
	}
}

func tupleToBPF(t Tuple) datapathFlowTuple {
	return datapathFlowTuple{
		Saddr: addrToBE(t.Src.Addr()),
		Daddr: addrToBE(t.Dst.Addr()),
		Sport: portToBE(t.Src.Port()),
		Dport: portToBE(t.Dst.Port()),
		Proto: uint8(t.Proto),
	}
}
