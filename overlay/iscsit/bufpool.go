package iscsit

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"net"
	"sync"
)

// Data buffers are pooled by power-of-two size class: a 1 MiB read or write would
// otherwise allocate 1 MiB per command and keep the garbage collector busy.
const (
	minPoolShift = 12 // 4 KiB
	maxPoolShift = 24 // 16 MiB
)

var bufPools [maxPoolShift + 1]sync.Pool

// getBuf returns a buffer of length n, pooled when n fits a size class.
func getBuf(n int) []byte {
	shift := max(bits.Len(uint(max(n, 1)-1)), minPoolShift)
	if shift > maxPoolShift {
		return make([]byte, n)
	}
	if b, ok := bufPools[shift].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<shift)
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minPoolShift || c > 1<<maxPoolShift || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	bufPools[bits.Len(uint(c))-1].Put(&b)
}

var zeroPad [4]byte

// appendPDU adds a PDU's pieces to a vectored write without copying its data.
func appendPDU(bufs net.Buffers, p *PDU, d digests) (net.Buffers, error) {
	if err := p.fixLengths(); err != nil {
		return nil, err
	}
	bufs = append(bufs, p.BHS[:])
	if len(p.AHS) > 0 {
		bufs = append(bufs, p.AHS)
	}
	if d.header {
		c := crc32.Update(crc32.Checksum(p.BHS[:], castagnoli), castagnoli, p.AHS)
		bufs = append(bufs, binary.LittleEndian.AppendUint32(nil, c))
	}
	if len(p.Data) == 0 {
		return bufs, nil
	}
	bufs = append(bufs, p.Data)
	padding := zeroPad[:pad4(len(p.Data))-len(p.Data)]
	if len(padding) > 0 {
		bufs = append(bufs, padding)
	}
	if d.data {
		c := crc32.Update(crc32.Checksum(p.Data, castagnoli), castagnoli, padding)
		bufs = append(bufs, binary.LittleEndian.AppendUint32(nil, c))
	}
	return bufs, nil
}

// readHeader reads the BHS, AHS and header digest of the next PDU.
func readHeader(r io.Reader, p *PDU, d digests) error {
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return err
	}
	p.AHS = nil
	if ahs := p.ahsWords() * 4; ahs > 0 {
		p.AHS = make([]byte, ahs)
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return fmt.Errorf("read AHS: %w", err)
		}
	}
	if d.header {
		var dg [4]byte
		if _, err := io.ReadFull(r, dg[:]); err != nil {
			return fmt.Errorf("read header digest: %w", err)
		}
		c := crc32.Update(crc32.Checksum(p.BHS[:], castagnoli), castagnoli, p.AHS)
		if binary.LittleEndian.Uint32(dg[:]) != c {
			return ErrHeaderDigest
		}
	}
	return nil
}

// readData reads the data segment (whose length is len(dst)) into dst, then its padding
// and digest.
func readData(r io.Reader, dst []byte, d digests) error {
	if len(dst) == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return fmt.Errorf("read data segment: %w", err)
	}
	var pad [4]byte
	padding := pad[:pad4(len(dst))-len(dst)]
	if _, err := io.ReadFull(r, padding); err != nil {
		return fmt.Errorf("read padding: %w", err)
	}
	if d.data {
		var dg [4]byte
		if _, err := io.ReadFull(r, dg[:]); err != nil {
			return fmt.Errorf("read data digest: %w", err)
		}
		c := crc32.Update(crc32.Checksum(dst, castagnoli), castagnoli, padding)
		if binary.LittleEndian.Uint32(dg[:]) != c {
			return ErrDataDigest
		}
	}
	return nil
}
