package head

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distonet/distonet/donate/pool"
	"github.com/google/go-cmp/cmp"
)

// fakeRunner records every argv and answers from a script keyed by the joined argv.
type fakeRunner struct {
	mu     sync.Mutex
	calls  []string
	script map[string][]reply // consumed in order; the last reply repeats
	onRun  func(argv string)
}

type reply struct {
	out  string
	code int // 0 = success
	err  string
}

func ok(out string) reply { return reply{out: out} }

func fail(code int, stderr string) reply { return reply{code: code, err: stderr} }

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	argv := strings.Join(append([]string{name}, args...), " ")
	f.mu.Lock()
	f.calls = append(f.calls, argv)
	rs, found := f.script[argv]
	var r reply
	if found && len(rs) > 0 {
		r = rs[0]
		if len(rs) > 1 {
			f.script[argv] = rs[1:]
		}
	}
	hook := f.onRun
	f.mu.Unlock()
	if !found {
		return nil, &CommandError{Argv: strings.Fields(argv), ExitCode: 127, Stderr: "fake: unexpected command", Err: errors.New("unexpected")}
	}
	if hook != nil {
		hook(argv)
	}
	if r.code != 0 {
		return []byte(r.out), &CommandError{Argv: strings.Fields(argv), ExitCode: r.code, Stderr: r.err, Err: fmt.Errorf("exit status %d", r.code)}
	}
	return []byte(r.out), nil
}

// recAttacher serves device paths from a map and records detaches.
type recAttacher struct {
	devs     map[string]string
	detached []string
}

func (r *recAttacher) Attach(_ context.Context, d pool.Disk) (string, error) {
	if dev, ok := r.devs[d.ID()]; ok {
		return dev, nil
	}
	return "", ErrNotFound
}

func (r *recAttacher) Path(d pool.Disk) string { return r.devs[d.ID()] }

func (r *recAttacher) Detach(_ context.Context, d pool.Disk) error {
	r.detached = append(r.detached, d.ID())
	return nil
}

const fixtureUUID = "e2080faf:7ebaa914:0ae32429:3de32668"

func aoeDisk(shelf int) pool.Disk {
	return pool.Disk{Node: fmt.Sprintf("n%d", shelf), Transport: pool.TransportAoE, Address: fmt.Sprintf("e%d.0", shelf), SizeBytes: 65 << 20}
}

// data0 is the array of the fixtures: members e1..e4 on vda..vdd, spare e5 on vde.
func data0(uuid string) pool.Array {
	return pool.Array{Name: "data0", Level: 6, MemberSizeBytes: 65 << 20, UUID: uuid,
		Members: []pool.Disk{aoeDisk(1), aoeDisk(2), aoeDisk(3), aoeDisk(4)}, Spares: []pool.Disk{aoeDisk(5)}}
}

func devMap(shelves ...int) map[string]string {
	m := map[string]string{}
	for _, s := range shelves {
		m[aoeDisk(s).ID()] = "/dev/vd" + string(rune('a'+s-1))
	}
	return m
}

func examineOut(uuid, name string) string {
	return fmt.Sprintf("MD_LEVEL=raid6\nMD_DEVICES=4\nMD_NAME=any:%s\nMD_UUID=%s\nMD_DEV_UUID=1:2:3:4\nMD_EVENTS=17\n", name, uuid)
}

const (
	noArray  = "mdadm: Array associated with md device /dev/md/data0 does not exist.\n"
	noSuper  = "mdadm: No md superblock detected on %s.\n"
	mdadmDet = "mdadm --detail /dev/md/data0"
)

type rig struct {
	run    *fakeRunner
	at     *recAttacher
	head   *Head
	mounts string
	root   string
}

func newRig(t *testing.T, present map[string]string, script map[string][]reply) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{run: &fakeRunner{script: script}, at: &recAttacher{devs: present}, mounts: filepath.Join(dir, "mounts"), root: filepath.Join(dir, "pool")}
	if err := os.WriteFile(r.mounts, []byte("proc /proc proc rw 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// mount and umount edit the fake mount table, as the kernel would.
	r.run.onRun = func(argv string) {
		f := strings.Fields(argv)
		switch f[0] {
		case "mount":
			b, _ := os.ReadFile(r.mounts)
			_ = os.WriteFile(r.mounts, append(b, fmt.Sprintf("%s %s ext4 rw 0 0\n", f[len(f)-2], f[len(f)-1])...), 0o644)
		case "umount":
			b, _ := os.ReadFile(r.mounts)
			var keep []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if fs := strings.Fields(l); len(fs) > 1 && fs[1] != f[1] {
					keep = append(keep, l)
				}
			}
			_ = os.WriteFile(r.mounts, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
		}
	}
	r.head = New(Config{Runner: r.run, Attachers: map[string]Attacher{pool.TransportAoE: r.at}, Mounts: r.mounts, MountRoot: r.root})
	return r
}

func (r *rig) mnt() string { return filepath.Join(r.root, "data0") }

func TestUpCreatesArrayWithBitmapSpareAndFilesystem(t *testing.T) {
	script := map[string][]reply{
		mdadmDet: {fail(1, noArray), ok(string(fixture(t, "detail-spare.txt")))},
		"blkid -p -o value -s TYPE /dev/md/data0":        {fail(2, "")},
		"/sbin/mke2fs -t ext4 -q -L data0 /dev/md/data0": {ok("")},
		"mdadm --create /dev/md/data0 --run --metadata=1.2 --homehost=any --name=data0 --level=6 --raid-devices=4 --bitmap=internal --spare-devices=1 /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde": {ok("")},
	}
	for _, d := range []string{"a", "b", "c", "d", "e"} {
		script["mdadm --examine --export /dev/vd"+d] = []reply{fail(1, fmt.Sprintf(noSuper, "/dev/vd"+d))}
	}
	r := newRig(t, devMap(1, 2, 3, 4, 5), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	st, err := r.head.Up(context.Background(), data0(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		mdadmDet,
		"mdadm --examine --export /dev/vda", "mdadm --examine --export /dev/vdb", "mdadm --examine --export /dev/vdc",
		"mdadm --examine --export /dev/vdd", "mdadm --examine --export /dev/vde",
		"mdadm --create /dev/md/data0 --run --metadata=1.2 --homehost=any --name=data0 --level=6 --raid-devices=4 --bitmap=internal --spare-devices=1 /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde",
		mdadmDet,
		"blkid -p -o value -s TYPE /dev/md/data0",
		"/sbin/mke2fs -t ext4 -q -L data0 /dev/md/data0",
		"mount -t ext4 /dev/md/data0 " + r.mnt(),
		mdadmDet,
	}
	if diff := cmp.Diff(want, r.run.calls); diff != "" {
		t.Errorf("argv sequence (-want +got):\n%s", diff)
	}
	if st.UUID != fixtureUUID || st.State != pool.ArrayRunning || st.MountPoint != r.mnt() || st.Filesystem != "ext4" {
		t.Errorf("status %+v", st)
	}
	if st.UsableBytes != 126976*1024 || st.Spares != 1 || st.Active != 4 {
		t.Errorf("sizes/counts %+v", st)
	}
	wantMembers := []pool.MemberStatus{
		{Disk: "aoe:e1.0", Node: "n1", Device: "/dev/vda", Role: "member", Slot: 0, State: "in_sync"},
		{Disk: "aoe:e2.0", Node: "n2", Device: "/dev/vdb", Role: "member", Slot: 1, State: "in_sync"},
		{Disk: "aoe:e3.0", Node: "n3", Device: "/dev/vdc", Role: "member", Slot: 2, State: "in_sync"},
		{Disk: "aoe:e4.0", Node: "n4", Device: "/dev/vdd", Role: "member", Slot: 3, State: "in_sync"},
		{Disk: "aoe:e5.0", Node: "n5", Device: "/dev/vde", Role: "spare", Slot: -1, State: "spare"},
	}
	if diff := cmp.Diff(wantMembers, st.Members); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
}

func TestUpWaitsForEveryMemberBeforeCreating(t *testing.T) {
	script := map[string][]reply{mdadmDet: {fail(1, noArray)}}
	for _, d := range []string{"a", "b", "c"} {
		script["mdadm --examine --export /dev/vd"+d] = []reply{fail(1, fmt.Sprintf(noSuper, "/dev/vd"+d))}
	}
	r := newRig(t, devMap(1, 2, 3), script)
	st, err := r.head.Up(context.Background(), data0(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pool.ArrayWaiting || !strings.Contains(st.Message, "aoe:e4.0") {
		t.Errorf("status %+v", st)
	}
	for _, c := range r.run.calls {
		if strings.Contains(c, "--create") || strings.Contains(c, "--assemble") {
			t.Errorf("ran %q while a member is missing", c)
		}
	}
}

func TestUpAssemblesDegradedWithinParity(t *testing.T) {
	// Members: e5 (vde) took slot 0 after a rebuild; e2 (vdb) is offline.
	a := data0(fixtureUUID)
	a.Members[0], a.Spares = aoeDisk(5), nil
	script := map[string][]reply{
		mdadmDet:                            {fail(1, noArray), ok(string(fixture(t, "detail-degraded2.txt")))},
		"mdadm --examine --export /dev/vde": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --examine --export /dev/vdc": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --examine --export /dev/vdd": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vde /dev/vdc /dev/vdd": {ok("")},
		"blkid -p -o value -s TYPE /dev/md/data0":                                                    {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":                                                              {ok("")},
	}
	present := devMap(3, 4, 5)
	r := newRig(t, present, script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	online := func(d pool.Disk) bool { return d.Address != "e2.0" }
	st, err := r.head.Up(context.Background(), a, online)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		mdadmDet,
		"mdadm --examine --export /dev/vde", "mdadm --examine --export /dev/vdc", "mdadm --examine --export /dev/vdd",
		"mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vde /dev/vdc /dev/vdd",
		mdadmDet,
		"blkid -p -o value -s TYPE /dev/md/data0",
		"/sbin/e2fsck -p /dev/md/data0",
		"mount -t ext4 /dev/md/data0 " + r.mnt(),
		mdadmDet,
	}
	if diff := cmp.Diff(want, r.run.calls); diff != "" {
		t.Errorf("argv sequence (-want +got):\n%s", diff)
	}
	if st.State != pool.ArrayDegraded || !st.Degraded {
		t.Errorf("status %+v", st)
	}
	if st.Members[1].State != "detached" {
		t.Errorf("offline member state %q, want detached", st.Members[1].State)
	}
}

func TestUpRefusesToAssembleBeyondParity(t *testing.T) {
	script := map[string][]reply{
		mdadmDet:                            {fail(1, noArray)},
		"mdadm --examine --export /dev/vdc": {ok(examineOut(fixtureUUID, "data0"))},
	}
	r := newRig(t, devMap(3), script)
	st, err := r.head.Up(context.Background(), data0(fixtureUUID), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pool.ArrayWaiting || !strings.Contains(st.Message, "1 of 4 members present") {
		t.Errorf("status %+v", st)
	}
}

func TestUpNeverCreatesOverForeignSuperblockOrRecreatesAKnownArray(t *testing.T) {
	t.Run("foreign superblock", func(t *testing.T) {
		script := map[string][]reply{mdadmDet: {fail(1, noArray)},
			"mdadm --examine --export /dev/vda": {ok(examineOut("11111111:22222222:33333333:44444444", "someone-else"))}}
		for _, d := range []string{"b", "c", "d", "e"} {
			script["mdadm --examine --export /dev/vd"+d] = []reply{fail(1, fmt.Sprintf(noSuper, "/dev/vd"+d))}
		}
		r := newRig(t, devMap(1, 2, 3, 4, 5), script)
		st, err := r.head.Up(context.Background(), data0(""), nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != pool.ArrayWaiting || !strings.Contains(st.Message, "another array's superblock") {
			t.Errorf("status %+v", st)
		}
	})
	t.Run("known UUID, blank disks", func(t *testing.T) {
		script := map[string][]reply{mdadmDet: {fail(1, noArray)}}
		for _, d := range []string{"a", "b", "c", "d", "e"} {
			script["mdadm --examine --export /dev/vd"+d] = []reply{fail(1, fmt.Sprintf(noSuper, "/dev/vd"+d))}
		}
		r := newRig(t, devMap(1, 2, 3, 4, 5), script)
		st, err := r.head.Up(context.Background(), data0(fixtureUUID), nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != pool.ArrayWaiting {
			t.Errorf("status %+v", st)
		}
		for _, c := range r.run.calls {
			if strings.Contains(c, "--create") {
				t.Errorf("recreated a known array: %q", c)
			}
		}
	})
}

func TestUpRejoinsReturningMembers(t *testing.T) {
	// Running array (vdb removed, fixture detail-degraded); vdb is back.
	tests := []struct {
		name    string
		examine reply
		readd   []reply
		want    []string
	}{
		{
			name:    "bitmap re-add",
			examine: ok(examineOut(fixtureUUID, "data0")),
			readd:   []reply{ok("mdadm: re-added /dev/vdb\n")},
			want:    []string{"mdadm /dev/md/data0 --re-add /dev/vdb"},
		},
		{
			name:    "re-add impossible: full add",
			examine: ok(examineOut(fixtureUUID, "data0")),
			readd:   []reply{fail(1, string(fixture(t, "b-cmd-readd-blank.txt")))},
			want:    []string{"mdadm /dev/md/data0 --re-add /dev/vdb", "mdadm /dev/md/data0 --add /dev/vdb"},
		},
		{
			name:    "blank replacement: add",
			examine: fail(1, fmt.Sprintf(noSuper, "/dev/vdb")),
			want:    []string{"mdadm /dev/md/data0 --add /dev/vdb"},
		},
		{
			name:    "foreign disk: left alone",
			examine: ok(examineOut("11111111:22222222:33333333:44444444", "other")),
			want:    nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := data0(fixtureUUID)
			a.Members[0], a.Spares = aoeDisk(5), nil
			script := map[string][]reply{
				mdadmDet:                                  {ok(string(fixture(t, "detail-degraded.txt")))},
				"mdadm --examine --export /dev/vdb":       {tt.examine},
				"mdadm /dev/md/data0 --re-add /dev/vdb":   tt.readd,
				"mdadm /dev/md/data0 --add /dev/vdb":      {ok("")},
				"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
				"/sbin/e2fsck -p /dev/md/data0":           {ok("")},
			}
			r := newRig(t, devMap(2, 3, 4, 5), script)
			script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
			if _, err := r.head.Up(context.Background(), a, nil); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range r.run.calls {
				if strings.HasPrefix(c, "mdadm /dev/md/data0 ") {
					got = append(got, c)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("member commands (-want +got):\n%s\nall: %q", diff, r.run.calls)
			}
		})
	}
}

func TestUpRemovesFaultyEntryBeforeReAdd(t *testing.T) {
	script := map[string][]reply{
		mdadmDet:                                  {ok(strings.ReplaceAll(string(fixture(t, "b-detail-faulty.txt")), "pool-always-0", "data0"))},
		"mdadm /dev/md/data0 --remove /dev/vda":   {ok("")},
		"mdadm --examine --export /dev/vda":       {ok(examineOut("9e9f35f0:00d2e1ab:c0cf185d:203f8bfa", "data0"))},
		"mdadm /dev/md/data0 --re-add /dev/vda":   {ok("")},
		"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":           {ok("")},
	}
	a := data0("9e9f35f0:00d2e1ab:c0cf185d:203f8bfa")
	a.Spares = nil
	r := newRig(t, devMap(1, 2, 3, 4), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range r.run.calls {
		if strings.HasPrefix(c, "mdadm /dev/md/data0 ") {
			got = append(got, c)
		}
	}
	if diff := cmp.Diff([]string{"mdadm /dev/md/data0 --remove /dev/vda", "mdadm /dev/md/data0 --re-add /dev/vda"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUpRestartsAnInactiveArray(t *testing.T) {
	inactive := "/dev/md/data0:\n           Version : 1.2\n        Raid Level : raid6\n     Total Devices : 1\n             State : inactive\n              Name : any:data0\n              UUID : " + fixtureUUID + "\n"
	script := map[string][]reply{
		mdadmDet:                            {ok(inactive), ok(string(fixture(t, "detail-clean.txt")))},
		"mdadm --stop /dev/md/data0":        {ok("")},
		"mdadm --examine --export /dev/vda": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --examine --export /dev/vdb": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --examine --export /dev/vdc": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --examine --export /dev/vdd": {ok(examineOut(fixtureUUID, "data0"))},
		"mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vda /dev/vdb /dev/vdc /dev/vdd": {ok("")},
	}
	a := data0(fixtureUUID)
	a.Spares = nil
	r := newRig(t, devMap(1, 2, 3, 4), script)
	r.head.cfg.Filesystem = ""
	st, err := r.head.Up(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.run.calls[1] != "mdadm --stop /dev/md/data0" || st.State != pool.ArrayRunning {
		t.Errorf("calls %q, status %+v", r.run.calls, st)
	}
}

// refusedDirty is what mdadm 4.2 printed in the guest test when the kernel would not start a
// dirty degraded RAID6 ("md/raid:md127: cannot start dirty degraded array.").
const refusedDirty = "mdadm: failed to RUN_ARRAY /dev/md/data0: Input/output error\n" +
	"mdadm: Not enough devices to start the array while not clean - consider --force.\n"

// dirtyRig is data0 with e5 in slot 0 (detail-degraded.txt), e2 gone, e3..e5 present.
func dirtyRig(t *testing.T, det []reply) (*rig, pool.Array, map[string][]reply) {
	a := data0(fixtureUUID)
	a.Members[0], a.Spares = aoeDisk(5), nil
	script := map[string][]reply{
		mdadmDet: det,
		"mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vde /dev/vdc /dev/vdd": {fail(1, refusedDirty)},
	}
	for _, d := range []string{"b", "c", "d", "e"} {
		script["mdadm --examine --export /dev/vd"+d] = []reply{ok(examineOut(fixtureUUID, "data0"))}
	}
	return newRig(t, devMap(3, 4, 5), script), a, script
}

func TestUpLeavesADirtyDegradedArrayAlone(t *testing.T) {
	r, a, script := dirtyRig(t, []reply{fail(1, noArray)})
	assemble3 := "mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vde /dev/vdc /dev/vdd"
	examine3 := []string{"mdadm --examine --export /dev/vde", "mdadm --examine --export /dev/vdc", "mdadm --examine --export /dev/vdd"}
	steps := []struct {
		name    string
		present map[string]string
		members string
		want    []string
	}{
		{"refused", devMap(3, 4, 5), "3 of 4", append(append([]string{mdadmDet}, examine3...), assemble3)},
		// Same members, same answer: no new attempt while the admin may be at work on them.
		{"not retried", devMap(3, 4, 5), "3 of 4", append([]string{mdadmDet}, examine3...)},
		// e2 is back: another member set is worth one more try.
		{"retried with e2", devMap(2, 3, 4, 5), "4 of 4", []string{mdadmDet, "mdadm --examine --export /dev/vde", "mdadm --examine --export /dev/vdb",
			"mdadm --examine --export /dev/vdc", "mdadm --examine --export /dev/vdd",
			"mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vde /dev/vdb /dev/vdc /dev/vdd"}},
	}
	script["mdadm --assemble /dev/md/data0 --run --uuid="+fixtureUUID+" /dev/vde /dev/vdb /dev/vdc /dev/vdd"] = []reply{fail(1, refusedDirty)}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r.at.devs = s.present
			r.run.calls = nil
			st, err := r.head.Up(context.Background(), a, nil)
			if !errors.Is(err, ErrDirtyDegraded) || st.State != pool.ArrayFailed {
				t.Fatalf("err %v status %+v", err, st)
			}
			for _, part := range []string{"(tried with " + s.members + " members): dirty and degraded", "mdadm --assemble --force --run /dev/md/data0", "e2fsck -f /dev/md/data0",
				"Input/output error; mdadm: Not enough devices to start the array while not clean - consider --force."} {
				if !strings.Contains(st.Message, part) {
					t.Errorf("message lacks %q: %s", part, st.Message)
				}
			}
			if strings.Contains(st.Message, "\n") {
				t.Errorf("message on several lines: %q", st.Message)
			}
			if diff := cmp.Diff(s.want, r.run.calls); diff != "" {
				t.Errorf("argv sequence (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUpChecksInFullWhatTheAdminForced(t *testing.T) {
	r, a, script := dirtyRig(t, []reply{fail(1, noArray), ok(string(fixture(t, "detail-degraded.txt")))})
	script["blkid -p -o value -s TYPE /dev/md/data0"] = []reply{ok("ext4\n")}
	script["/sbin/e2fsck -f -p /dev/md/data0"] = []reply{fail(1, "data0: 12/49152 files, fixed\n")}
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); !errors.Is(err, ErrDirtyDegraded) {
		t.Fatalf("first Up: %v", err)
	}
	// The admin ran mdadm --assemble --force --run: the array runs, degraded.
	r.run.calls = nil
	st, err := r.head.Up(context.Background(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{mdadmDet, mdadmDet, "blkid -p -o value -s TYPE /dev/md/data0", "/sbin/e2fsck -f -p /dev/md/data0",
		"mount -t ext4 /dev/md/data0 " + r.mnt(), mdadmDet}
	if diff := cmp.Diff(want, r.run.calls); diff != "" {
		t.Errorf("argv sequence (-want +got):\n%s", diff)
	}
	if st.State != pool.ArrayDegraded || st.MountPoint != r.mnt() {
		t.Errorf("status %+v", st)
	}
	if len(r.head.fullCheck) != 0 || len(r.head.refused) != 0 {
		t.Errorf("left behind: full check %v, refusals %v", r.head.fullCheck, r.head.refused)
	}
}

func TestUpNeverForcesADirtyDegradedArray(t *testing.T) {
	r, a, _ := dirtyRig(t, []reply{fail(1, noArray)})
	for i := 0; i < 3; i++ {
		_, _ = r.head.Up(context.Background(), a, nil)
	}
	for _, c := range r.run.calls {
		if strings.Contains(c, "--force") || strings.Contains(c, "--create") || strings.Contains(c, "mke2fs") {
			t.Errorf("the head ran %q on a dirty degraded array", c)
		}
	}
}

func TestWithdrawFailsAndRemovesAtOnce(t *testing.T) {
	script := map[string][]reply{
		mdadmDet: {ok(string(fixture(t, "detail-clean.txt")))},
		"mdadm /dev/md/data0 --fail /dev/vda --remove /dev/vda": {ok("")},
		"blkid -p -o value -s TYPE /dev/md/data0":               {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":                         {ok("")},
	}
	a := data0(fixtureUUID)
	a.Spares = nil
	r := newRig(t, devMap(1, 2, 3, 4), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	r.run.calls = nil
	if err := r.head.Withdraw(context.Background(), a, aoeDisk(1)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{mdadmDet, "mdadm /dev/md/data0 --fail /dev/vda --remove /dev/vda"}, r.run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aoe:e1.0"}, r.at.detached); diff != "" {
		t.Errorf("detached (-want +got):\n%s", diff)
	}
}

func TestStopUnmountsStopsAndReleases(t *testing.T) {
	script := map[string][]reply{
		mdadmDet:                     {ok(string(fixture(t, "detail-clean.txt")))},
		"mdadm --stop /dev/md/data0": {ok("mdadm: stopped /dev/md/data0\n")},
	}
	r := newRig(t, devMap(1, 2, 3, 4, 5), script)
	script["umount "+r.mnt()] = []reply{ok("")}
	if err := os.WriteFile(r.mounts, []byte("/dev/md127 "+r.mnt()+" ext4 rw 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.head.Stop(context.Background(), data0(fixtureUUID)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"umount " + r.mnt(), mdadmDet, "mdadm --stop /dev/md/data0"}, r.run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aoe:e1.0", "aoe:e2.0", "aoe:e3.0", "aoe:e4.0", "aoe:e5.0"}, r.at.detached); diff != "" {
		t.Errorf("detached (-want +got):\n%s", diff)
	}
}

func TestStopKeepsArrayWhenUnmountFails(t *testing.T) {
	script := map[string][]reply{}
	r := newRig(t, devMap(1, 2, 3, 4, 5), script)
	script["umount "+r.mnt()] = []reply{fail(32, "umount: "+r.mnt()+": target is busy.\n")}
	if err := os.WriteFile(r.mounts, []byte("/dev/md127 "+r.mnt()+" ext4 rw 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := r.head.Stop(context.Background(), data0(fixtureUUID))
	if err == nil || !strings.Contains(err.Error(), "target is busy") {
		t.Fatalf("err = %v", err)
	}
	if len(r.run.calls) != 1 || len(r.at.detached) != 0 {
		t.Errorf("went on after a failed unmount: %q, detached %v", r.run.calls, r.at.detached)
	}
}

func TestStatusDuringRebuild(t *testing.T) {
	script := map[string][]reply{mdadmDet: {ok(string(fixture(t, "detail-recovery.txt")))}}
	a := data0(fixtureUUID)
	a.Members[0], a.Spares = aoeDisk(5), nil
	r := newRig(t, devMap(2, 3, 4, 5), script)
	r.head.attach(context.Background(), a, nil)
	st, err := r.head.Status(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pool.ArraySyncing || st.SyncAction != "rebuild" || st.SyncPercent != 5 || !st.Degraded {
		t.Errorf("status %+v", st)
	}
	if st.Members[0].State != "rebuilding" || st.Members[1].State != "in_sync" {
		t.Errorf("members %+v", st.Members)
	}
}

func TestUpHotReplacesUnplannedMemberWithSpare(t *testing.T) {
	// e2 (vdb) was retired; the planner gave its slot to e5 (vde), already a spare in md.
	a := data0(fixtureUUID)
	a.Members[1], a.Spares = aoeDisk(5), nil
	script := map[string][]reply{
		mdadmDet: {ok(string(fixture(t, "detail-spare.txt")))},
		"mdadm /dev/md/data0 --replace /dev/vdb --with /dev/vde": {ok("")},
		"blkid -p -o value -s TYPE /dev/md/data0":                {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":                          {ok("")},
	}
	r := newRig(t, devMap(1, 3, 4, 5), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range r.run.calls {
		if strings.HasPrefix(c, "mdadm /dev/md/data0 ") {
			got = append(got, c)
		}
	}
	if diff := cmp.Diff([]string{"mdadm /dev/md/data0 --replace /dev/vdb --with /dev/vde"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUpKeepsUnplannedMemberWithoutSpare(t *testing.T) {
	// e1 (vda) is no longer planned and nothing replaces it: md keeps it, nothing is failed.
	a := data0(fixtureUUID)
	a.Members[0], a.Spares = pool.Disk{}, nil
	script := map[string][]reply{
		mdadmDet: {ok(string(fixture(t, "detail-clean.txt")))},
		"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":           {ok("")},
	}
	r := newRig(t, devMap(2, 3, 4), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.run.calls {
		if strings.HasPrefix(c, "mdadm /dev/md/data0 ") {
			t.Errorf("touched a member without a spare in place: %q", c)
		}
	}
}

func TestUpRemovesReplacedMember(t *testing.T) {
	// After the copy md marks the replaced member faulty: it is removed.
	a := data0("9e9f35f0:00d2e1ab:c0cf185d:203f8bfa")
	a.Members[0], a.Spares = pool.Disk{}, nil
	script := map[string][]reply{
		mdadmDet:                                  {ok(strings.ReplaceAll(string(fixture(t, "b-detail-faulty.txt")), "pool-always-0", "data0"))},
		"mdadm /dev/md/data0 --remove /dev/vda":   {ok("")},
		"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":           {ok("")},
	}
	r := newRig(t, devMap(2, 3, 4), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	if _, err := r.head.Up(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.run.calls, "\n"), "mdadm /dev/md/data0 --remove /dev/vda") {
		t.Errorf("faulty unplanned member not removed: %q", r.run.calls)
	}
}

func TestUpNeverReplacesAPlannedMemberItDidNotAttach(t *testing.T) {
	// e2 (vdb) is planned but reported offline this pass: md still holds it, and the spare
	// e5 (vde) is there. It must not be mistaken for an unplanned member.
	script := map[string][]reply{
		mdadmDet: {ok(string(fixture(t, "detail-spare.txt")))},
		"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
		"/sbin/e2fsck -p /dev/md/data0":           {ok("")},
	}
	r := newRig(t, devMap(1, 2, 3, 4, 5), script)
	script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
	online := func(d pool.Disk) bool { return d.Address != "e2.0" }
	if _, err := r.head.Up(context.Background(), data0(fixtureUUID), online); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.run.calls {
		if strings.HasPrefix(c, "mdadm /dev/md/data0 ") {
			t.Errorf("touched a planned member: %q", c)
		}
	}
}

func TestStatusTakesSyncProgressFromMdstat(t *testing.T) {
	dir := t.TempDir()
	devmd := filepath.Join(dir, "md")
	if err := os.MkdirAll(devmd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../md127", filepath.Join(devmd, "data0")); err != nil {
		t.Fatal(err)
	}
	mdstat := filepath.Join(dir, "mdstat")
	if err := os.WriteFile(mdstat, fixture(t, "mdstat-resync.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := &fakeRunner{script: map[string][]reply{"mdadm --detail " + filepath.Join(devmd, "data0"): {ok(string(fixture(t, "detail-resync.txt")))}}}
	h := New(Config{Runner: run, DevMD: devmd, Mdstat: mdstat, Filesystem: "none", Attachers: map[string]Attacher{}})
	st, err := h.Status(context.Background(), data0(fixtureUUID))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pool.ArraySyncing || st.SyncAction != "resync" || st.SyncPercent != 4.8 || st.SyncSpeed != "1152K/sec" || st.SyncFinish != "0.8min" {
		t.Errorf("status %+v", st)
	}
}

func TestUpLeavesABrokenFilesystemUnmounted(t *testing.T) {
	for _, tt := range []struct {
		code    int
		mounted bool
	}{{1, true}, {2, true}, {4, false}, {8, false}} {
		t.Run(fmt.Sprintf("e2fsck exit %d", tt.code), func(t *testing.T) {
			a := data0(fixtureUUID)
			a.Spares = nil
			script := map[string][]reply{
				mdadmDet: {ok(string(fixture(t, "detail-clean.txt")))},
				"blkid -p -o value -s TYPE /dev/md/data0": {ok("ext4\n")},
				"/sbin/e2fsck -p /dev/md/data0":           {fail(tt.code, "pool-always-0: UNEXPECTED INCONSISTENCY\n")},
			}
			r := newRig(t, devMap(1, 2, 3, 4), script)
			script["mount -t ext4 /dev/md/data0 "+r.mnt()] = []reply{ok("")}
			_, err := r.head.Up(context.Background(), a, nil)
			mounted := strings.Contains(strings.Join(r.run.calls, "\n"), "mount -t ext4")
			if mounted != tt.mounted || (err == nil) != tt.mounted {
				t.Errorf("mounted %v err %v", mounted, err)
			}
		})
	}
}
