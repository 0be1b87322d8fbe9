package iscsit

import (
	"fmt"
	"github.com/distonet/distonet/internal/lab"
	"strconv"
	"strings"
	"testing"
)

// conformanceFloor is the number of iscsi-test-cu tests that passed when this was last
// recorded (overlay/CONFORMANCE.md). A drop fails the test; raise it when more pass.
var conformanceFloor = map[string]int{"SCSI": 215, "iSCSI": 14}

// iscsi-test-cu logs in with these two names; both must pass the ACL.
var testCUInitiators = []string{
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
}

func TestConformance(t *testing.T) {
	n := newTestNet(t)
	lab.Require(t, "iscsi-test-cu")
	s := n.startServer(t, Config{})
	spec := TargetSpec{IQN: IQNForNode("conformance"), LUNs: []string{newVolume(t, 1<<30)},
		CHAPUser: "conformance", CHAPSecret: "conformance-secret-1", AllowedInitiators: testCUInitiators}
	if err := s.AddTarget(spec); err != nil {
		t.Fatal(err)
	}
	for _, family := range []string{"SCSI", "iSCSI"} {
		t.Run(family, func(t *testing.T) {
			// A second run only when the first falls short: a few iSCSI tests have 3-5 s
			// timeouts that a machine under heavy load can miss; a real regression fails twice.
			var out string
			var passed int
			for attempt := 1; attempt <= 2; attempt++ {
				out, _ = n.cliNS.Exec("iscsi-test-cu", "-d", "-n", "--test="+family,
					url(spec.CHAPUser, spec.CHAPSecret, n.srvIP, spec.IQN, 0))
				total, p, failed, err := cuSummary(out)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				passed = p
				t.Logf("iscsi-test-cu %s run %d: %d of %d passed, %d failed", family, attempt, passed, total, failed)
				if passed >= conformanceFloor[family] {
					break
				}
			}
			if passed < conformanceFloor[family] {
				t.Errorf("iscsi-test-cu %s: %d passed, recorded floor %d\n%s", family, passed, conformanceFloor[family], failures(out))
			}
		})
	}
}

// cuSummary reads CUnit's "tests  total ran passed failed inactive" line.
func cuSummary(out string) (total, passed, failed int, err error) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[0] == "tests" {
			nums := make([]int, 5)
			for i := range nums {
				if nums[i], err = strconv.Atoi(f[i+1]); err != nil {
					return 0, 0, 0, fmt.Errorf("summary line %q: %w", l, err)
				}
			}
			return nums[0], nums[2], nums[3], nil
		}
	}
	return 0, 0, 0, fmt.Errorf("no CUnit summary in iscsi-test-cu output")
}

func failures(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "had failures") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
