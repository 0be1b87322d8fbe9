package web

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Bulk enrollment reads a CSV file whose first line names the columns:
//
//	mac,name,group,image,donate,window[,volume_size]
//
// mac, name and image are required columns; the others may be left out or empty. Lines
// starting with '#' are comments. The whole file is checked first and, if any line is wrong,
// nothing is enrolled and every problem is listed with its line: a half-applied file is
// harder to fix than a refused one.

// BulkColumns are the columns a bulk CSV may have, in the documented order.
var BulkColumns = []string{"mac", "name", "group", "image", "donate", "window", "volume_size"}

var bulkRequired = []string{"mac", "name", "image"}

// maxBulkRows bounds one file (a room or a cluster, not a data centre at once).
const maxBulkRows = 4096

// BulkRow is one node line of a bulk file.
type BulkRow struct {
	Line                                                int // 1-based line in the file
	MAC, Name, Group, Image, Donate, Window, VolumeSize string
}

// LineError is a problem on one line of a bulk file; Field is a column name or "".
type LineError struct {
	Line    int
	Field   string
	Message string
}

func (e LineError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Message)
	}
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Message)
}

// ParseBulk reads a bulk file's syntax (header, columns, quoting). It checks no node field:
// the caller validates each row as an enrollment form.
func ParseBulk(r io.Reader) ([]BulkRow, []LineError) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, []LineError{{Line: 0, Message: fmt.Sprintf("read file: %v", err)}}
	}
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // spreadsheets write a UTF-8 BOM
	cr := csv.NewReader(bytes.NewReader(raw))
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	cr.FieldsPerRecord = -1 // counted here, to report the line in our words

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, []LineError{{Line: 1, Message: "empty file: want a header line such as " + strings.Join(BulkColumns[:6], ",")}}
	}
	if err != nil {
		return nil, []LineError{csvError(err)}
	}
	hline, _ := cr.FieldPos(0)
	col := map[string]int{}
	var errs []LineError
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case !slices.Contains(BulkColumns, h):
			errs = append(errs, LineError{Line: hline, Message: fmt.Sprintf("unknown column %q: want some of %s", h, strings.Join(BulkColumns, ","))})
		case col[h] != 0:
			errs = append(errs, LineError{Line: hline, Message: fmt.Sprintf("column %q named twice", h)})
		default:
			col[h] = i + 1 // 0 means absent
		}
	}
	for _, req := range bulkRequired {
		if col[req] == 0 {
			errs = append(errs, LineError{Line: hline, Message: fmt.Sprintf("missing column %q (required: %s)", req, strings.Join(bulkRequired, ","))})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}

	var rows []BulkRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, append(errs, csvError(err))
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			errs = append(errs, LineError{Line: line, Message: fmt.Sprintf("%d fields, the header has %d", len(rec), len(header))})
			continue
		}
		if len(rows)+len(errs) >= maxBulkRows {
			return nil, append(errs, LineError{Line: line, Message: fmt.Sprintf("more than %d nodes in one file: split it", maxBulkRows)})
		}
		get := func(c string) string {
			if i := col[c]; i != 0 {
				return strings.TrimSpace(rec[i-1])
			}
			return ""
		}
		rows = append(rows, BulkRow{Line: line, MAC: get("mac"), Name: get("name"), Group: get("group"), Image: get("image"),
			Donate: get("donate"), Window: get("window"), VolumeSize: get("volume_size")})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(rows) == 0 {
		return nil, []LineError{{Line: hline, Message: "no node lines after the header"}}
	}
	return rows, nil
}

func csvError(err error) LineError {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return LineError{Line: pe.Line, Message: pe.Err.Error()}
	}
	return LineError{Message: err.Error()}
}

// form turns a row into an enrollment form.
func (b BulkRow) form() nodeForm {
	return nodeForm{MAC: b.MAC, Name: b.Name, Group: b.Group, Image: b.Image, Donate: b.Donate, Window: b.Window, VolumeSize: b.VolumeSize}
}
