package tftp

import (
	"strconv"
	"time"
)

// Limits of the options (RFC 2348, RFC 2349, RFC 7440).
const (
	defaultBlockSize = 512
	minBlockSize     = 8
	maxBlockSize     = 65464
	maxTimeoutSecs   = 255
	maxWindowSize    = 65535
	// windowBytes bounds the memory a send-ahead window may pin per transfer.
	windowBytes = 1 << 20
)

// limits are the server's caps on what a client may negotiate for one transfer.
type limits struct {
	maxBlockSize int // from Config.MaxBlockSize and the interface MTU
	maxWindow    int // from Config.MaxWindow; 0 refuses windowsize
}

// params are the negotiated settings of one transfer.
type params struct {
	blockSize int
	timeout   time.Duration // 0: the server's default
	window    int           // RFC 7440 windowsize; 1 is lockstep
}

// negotiate applies RFC 2347's rules: options the server does not know or whose value is
// out of range are left out of the OACK (the client then uses the default), and a value the
// server must lower (blksize, windowsize) is acknowledged with the lowered value.
// size is the file's length for tsize. The OACK keeps the order of the request.
func negotiate(opts []Option, size int64, lim limits) (params, OACK) {
	p := params{blockSize: defaultBlockSize, window: 1}
	var oack OACK
	for _, o := range opts {
		n, err := strconv.Atoi(o.Value)
		if err != nil {
			continue
		}
		switch o.Name {
		case "blksize":
			if n < minBlockSize || n > maxBlockSize {
				continue
			}
			n = min(n, lim.maxBlockSize)
			p.blockSize = n
		case "tsize":
			if n < 0 || size <= 0 {
				continue // curl rejects an OACK with tsize 0: leave it out for an empty file
			}
			n = int(size)
		case "timeout":
			if n < 1 || n > maxTimeoutSecs {
				continue
			}
			p.timeout = time.Duration(n) * time.Second
		case "windowsize":
			if n < 1 || n > maxWindowSize || lim.maxWindow < 1 {
				continue
			}
			n = min(n, lim.maxWindow)
			p.window = n
		default:
			continue
		}
		oack = append(oack, Option{Name: o.Name, Value: strconv.Itoa(n)})
	}
	// Keep the window's buffers bounded whatever the block size.
	if p.window > 1 && p.window*p.blockSize > windowBytes {
		p.window = max(1, windowBytes/p.blockSize)
		for i := range oack {
			if oack[i].Name == "windowsize" {
				oack[i].Value = strconv.Itoa(p.window)
			}
		}
	}
	return p, oack
}

func (o OACK) option(name string) (string, bool) {
	for _, x := range o {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}
