package iscsi

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// chapMD5 is CHAP_A=5, the only algorithm RFC 7143 requires and every target speaks.
const chapMD5 = "5"

// ParseBinary decodes an iSCSI binary value: 0x-prefixed hex or 0b-prefixed base64.
func ParseBinary(v string) ([]byte, error) {
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("binary value %q: %w", v, err)
		}
		return b, nil
	case strings.HasPrefix(v, "0b") || strings.HasPrefix(v, "0B"):
		b, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("binary value %q: %w", v, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("binary value %q: neither 0x hex nor 0b base64", v)
}

// ChapResponse computes CHAP_R = MD5(identifier || secret || challenge) (RFC 1994).
func ChapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// chapAnswer turns the target's CHAP_A/CHAP_I/CHAP_C into our CHAP_N/CHAP_R keys.
func chapAnswer(ks Keys, user, secret string) (Keys, error) {
	if a, _ := ks.Get("CHAP_A"); a != chapMD5 {
		return nil, fmt.Errorf("CHAP: target chose algorithm %q, want MD5 (5)", a)
	}
	is, ok := ks.Get("CHAP_I")
	if !ok {
		return nil, fmt.Errorf("CHAP: target sent no CHAP_I")
	}
	id, err := strconv.ParseUint(is, 0, 8)
	if err != nil {
		return nil, fmt.Errorf("CHAP: CHAP_I %q: %w", is, err)
	}
	cs, ok := ks.Get("CHAP_C")
	if !ok {
		return nil, fmt.Errorf("CHAP: target sent no CHAP_C")
	}
	challenge, err := ParseBinary(cs)
	if err != nil {
		return nil, fmt.Errorf("CHAP: CHAP_C: %w", err)
	}
	if len(challenge) == 0 || len(challenge) > 1024 {
		return nil, fmt.Errorf("CHAP: challenge of %d bytes", len(challenge))
	}
	r := ChapResponse(byte(id), secret, challenge)
	return Keys{{"CHAP_N", user}, {"CHAP_R", "0x" + hex.EncodeToString(r)}}, nil
}
