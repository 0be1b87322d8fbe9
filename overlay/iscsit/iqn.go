package iscsit

import (
	"fmt"
	"strings"
)

// IQNPrefix names DiStoNet's targets (the naming authority is the project's domain).
const IQNPrefix = "iqn.2011-06.org.distonet"

// IQNForNode returns the IQN of a node's volume target, e.g. iqn.2011-06.org.distonet:node.n1.
// Characters an IQN may not hold become '-', upper case becomes lower case.
func IQNForNode(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return IQNPrefix + ":node." + b.String()
}

// ValidIQN checks the iSCSI name rules we rely on (RFC 3720 §3.2.6): "iqn." or "eui." or
// "naa." type, at most 223 bytes, lower-case letters, digits, '-', '.', ':'.
func ValidIQN(s string) error {
	if len(s) == 0 || len(s) > 223 {
		return fmt.Errorf("iqn %q: length %d not in 1..223", s, len(s))
	}
	if !strings.HasPrefix(s, "iqn.") && !strings.HasPrefix(s, "eui.") && !strings.HasPrefix(s, "naa.") {
		return fmt.Errorf("iqn %q: must start with iqn, eui or naa type", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':'
		if !ok {
			return fmt.Errorf("iqn %q: character %q not allowed", s, r)
		}
	}
	return nil
}
