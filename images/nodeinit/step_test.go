package nodeinit

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestStepRetriesAndSaysWhy(t *testing.T) {
	var con bytes.Buffer
	n := &node{cfg: Config{MaxTries: 5}, con: &con}
	tries := 0
	n.step(context.Background(), "iscsi", "", func(context.Context) (string, error) {
		tries++
		if tries == 1 {
			return "", errors.New("iSCSI login refused: authentication failed (CHAP)")
		}
		return "logged in", nil
	})
	want := []string{
		"distonet-init: iscsi: FAILED (try 1): iSCSI login refused: authentication failed (CHAP)",
		"distonet-init: iscsi: retrying in 1s",
		"distonet-init: iscsi: logged in (",
	}
	out := con.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("console lacks %q:\n%s", w, out)
		}
	}
	if tries != 2 {
		t.Errorf("fn ran %d times, want 2", tries)
	}
}
