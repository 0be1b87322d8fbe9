package iscsit

import (
	"bytes"
	"errors"
	"fmt"
)

// KV is one text key=value pair (RFC 7143 §6). Order matters in negotiation, so a text data
// segment is a list, not a map.
type KV struct{ Key, Value string }

// TextParams is the content of a Login or Text data segment.
type TextParams []KV

// Limits from RFC 7143 §6.1: keys up to 63 bytes; values are bounded by the data segment.
const maxKeyLen = 63

// ErrMalformedText reports a data segment that is not a list of key=value pairs.
var ErrMalformedText = errors.New("iscsi: malformed text key")

// UnmarshalBinary parses NUL-separated key=value pairs. Empty strings between NULs (padding
// some initiators leave) are skipped.
func (t *TextParams) UnmarshalBinary(b []byte) error {
	var out TextParams
	for len(b) > 0 {
		var item []byte
		if i := bytes.IndexByte(b, 0); i >= 0 {
			item, b = b[:i], b[i+1:]
		} else {
			item, b = b, nil
		}
		if len(item) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(item, []byte("="))
		if !ok {
			return fmt.Errorf("%w: %q has no '='", ErrMalformedText, truncate(item))
		}
		if len(k) == 0 || len(k) > maxKeyLen {
			return fmt.Errorf("%w: key length %d", ErrMalformedText, len(k))
		}
		out = append(out, KV{string(k), string(v)})
	}
	*t = out
	return nil
}

// MarshalBinary encodes the pairs, each followed by a NUL.
func (t TextParams) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	for _, kv := range t {
		if kv.Key == "" || len(kv.Key) > maxKeyLen || bytes.ContainsAny([]byte(kv.Key), "=\x00") {
			return nil, fmt.Errorf("%w: key %q", ErrMalformedText, kv.Key)
		}
		if bytes.IndexByte([]byte(kv.Value), 0) >= 0 {
			return nil, fmt.Errorf("%w: value of %q holds a NUL", ErrMalformedText, kv.Key)
		}
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
		b.WriteByte(0)
	}
	return b.Bytes(), nil
}

// Get returns the last value of key.
func (t TextParams) Get(key string) (string, bool) {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].Key == key {
			return t[i].Value, true
		}
	}
	return "", false
}

func truncate(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "…"
	}
	return string(b)
}
