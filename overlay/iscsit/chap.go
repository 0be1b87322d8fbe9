package iscsit

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// CHAP as used by iSCSI (RFC 7143 §12.1.3, RFC 1994): the responder proves it knows the
// secret with MD5(identifier || secret || challenge). Only MD5 (CHAP_A=5) is offered.
const chapMD5 = "5"

// chapChallengeLen is the size of the random challenges we send; RFC 7143 wants them
// unpredictable and at least as long as the digest.
const chapChallengeLen = 16

var errCHAPValue = errors.New("iscsi: malformed CHAP value")

// chapResponse computes the CHAP response for the given identifier, secret and challenge.
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// chapVerify checks a response in constant time.
func chapVerify(id byte, secret string, challenge, response []byte) bool {
	return subtle.ConstantTimeCompare(chapResponse(id, secret, challenge), response) == 1
}

// newChallenge returns a random identifier and challenge.
func newChallenge() (byte, []byte, error) {
	b := make([]byte, 1+chapChallengeLen)
	if _, err := rand.Read(b); err != nil {
		return 0, nil, fmt.Errorf("chap challenge: %w", err)
	}
	return b[0], b[1:], nil
}

// decodeCHAPBinary decodes a CHAP_C or CHAP_R value: "0x" hex or "0b" base64
// (RFC 7143 §6.1, binary-value).
func decodeCHAPBinary(s string) ([]byte, error) {
	switch {
	case len(s) > 2 && (strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X")):
		h := s[2:]
		if len(h)%2 == 1 {
			h = "0" + h
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errCHAPValue, err)
		}
		return b, nil
	case len(s) > 2 && (strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0B")):
		b, err := base64.StdEncoding.DecodeString(s[2:])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errCHAPValue, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: no 0x or 0b prefix", errCHAPValue)
}

func encodeCHAPBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }

// decodeCHAPID parses CHAP_I, a number 0-255.
func decodeCHAPID(s string) (byte, error) {
	v, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		return 0, fmt.Errorf("%w: CHAP_I %q", errCHAPValue, s)
	}
	return byte(v), nil
}
