package web

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBulk(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []BulkRow
		wantErrs []LineError
	}{
		{"documented order", "mac,name,group,image,donate,window\n52:54:00:00:00:01,pc01,room1,debian-12,aoe,20:00-07:00\n",
			[]BulkRow{{Line: 2, MAC: "52:54:00:00:00:01", Name: "pc01", Group: "room1", Image: "debian-12", Donate: "aoe", Window: "20:00-07:00"}}, nil},
		{"any order, case, spaces, BOM, CRLF, comments, blank lines", "\xef\xbb\xbf Name , IMAGE,mac,volume_size\r\n# room 2\r\n\r\npc02 , alpine ,52-54-00-00-00-02, 20G\r\n",
			[]BulkRow{{Line: 4, MAC: "52-54-00-00-00-02", Name: "pc02", Image: "alpine", VolumeSize: "20G"}}, nil},
		{"quoted field", "mac,name,image\n\"52:54:00:00:00:03\",\"pc03\",\"a,b\"\n",
			[]BulkRow{{Line: 2, MAC: "52:54:00:00:00:03", Name: "pc03", Image: "a,b"}}, nil},
		{"empty", "", nil, []LineError{{Line: 1, Message: "empty file: want a header line such as mac,name,group,image,donate,window"}}},
		{"unknown and twice", "mac,name,image,name,x\n", nil, []LineError{
			{Line: 1, Message: `column "name" named twice`},
			{Line: 1, Message: `unknown column "x": want some of mac,name,group,image,donate,window,volume_size`}}},
		{"missing required", "mac,group\n", nil, []LineError{
			{Line: 1, Message: `missing column "name" (required: mac,name,image)`},
			{Line: 1, Message: `missing column "image" (required: mac,name,image)`}}},
		{"field counts", "mac,name,image\na,b\nc,d,e\nf,g,h,i\n", nil, []LineError{
			{Line: 2, Message: "2 fields, the header has 3"},
			{Line: 4, Message: "4 fields, the header has 3"}}},
		{"bad quote", "mac,name,image\na,\"b,c\n", nil, []LineError{{Line: 2, Message: `extraneous or missing " in quoted-field`}}},
		{"no rows", "mac,name,image\n# nothing yet\n", nil, []LineError{{Line: 1, Message: "no node lines after the header"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, errs := ParseBulk(strings.NewReader(tc.in))
			if d := cmp.Diff(tc.want, rows); d != "" {
				t.Errorf("rows (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantErrs, errs); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseBulkBoundsRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("mac,name,image\n")
	for i := 0; i <= maxBulkRows; i++ {
		b.WriteString("52:54:00:00:00:01,n,i\n")
	}
	rows, errs := ParseBulk(strings.NewReader(b.String()))
	if rows != nil || len(errs) != 1 || !strings.Contains(errs[0].Message, "split it") {
		t.Errorf("%d rows, errors %v", len(rows), errs)
	}
}

// FuzzParseBulk: any input parses without panicking into either rows or errors, and rows
// written back as CSV parse to the same rows.
func FuzzParseBulk(f *testing.F) {
	f.Add([]byte("mac,name,group,image,donate,window\n52:54:00:00:00:01,pc01,room1,debian-12,aoe,20:00-07:00\n"))
	f.Add([]byte("name,image,mac\n\"a\"\"b\",x,y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, errs := ParseBulk(bytes.NewReader(data))
		if (rows == nil) == (errs == nil) {
			t.Fatalf("want rows xor errors, got %d rows and %v", len(rows), errs)
		}
		if rows == nil {
			return
		}
		// A line starting with '#' would read back as a comment: csv.Writer does not quote it.
		for _, r := range rows {
			if strings.HasPrefix(r.MAC, "#") {
				return
			}
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Write(BulkColumns)
		for _, r := range rows {
			if r.Line < 2 {
				t.Fatalf("row on line %d: the header is line 1 or later", r.Line)
			}
			w.Write([]string{r.MAC, r.Name, r.Group, r.Image, r.Donate, r.Window, r.VolumeSize})
		}
		w.Flush()
		again, errs := ParseBulk(&buf)
		if errs != nil {
			t.Fatalf("rows written back do not parse: %v\n%q", errs, buf.String())
		}
		strip := func(rs []BulkRow) []BulkRow {
			out := make([]BulkRow, len(rs))
			for i, r := range rs {
				r.Line = 0
				out[i] = r
			}
			return out
		}
		if d := cmp.Diff(strip(rows), strip(again)); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"", 0, false},
		{"20G", 20 << 30, false},
		{"20GiB", 20 << 30, false},
		{"20gb", 20 << 30, false},
		{"512M", 512 << 20, false},
		{"1.5T", 3 << 39, false},
		{"1048576", 1 << 20, false},
		{" 8 G ", 8 << 30, false},
		{"1K", 0, true}, // below 1M
		{"-1G", 0, true},
		{"0", 0, true},
		{"lots", 0, true},
		{"G", 0, true},
		{"1e30", 0, true},
		{"NaN", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if (err != nil) != tc.bad || got != tc.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d, bad=%v", tc.in, got, err, tc.want, tc.bad)
			}
			if err == nil && got > 0 {
				if back, err := parseSize(formatSize(got)); err != nil || back != got {
					t.Errorf("formatSize(%d) = %q reads back as %d, %v", got, formatSize(got), back, err)
				}
			}
		})
	}
}
