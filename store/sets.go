package store

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Writes of many rows at once (a deployment to a whole fleet, its
// deliveries, a flush of download times) are set-based: the rows travel as
// one JSON array bound to one parameter, and one statement reads them as a
// table (rowSet). So the statements such a write executes do not grow with
// its rows, one statement text serves every size (it is prepared once), and
// no limit on bound parameters applies (SQLite's and PostgreSQL's differ).

// rowSet is the FROM item that reads the JSON array bound to parameter n as
// a table of text columns cols: SQLite's json_each, PostgreSQL's
// jsonb_to_recordset. Each element is an object keyed by the column names.
func (t *Tx) rowSet(n int, cols ...string) string {
	var b strings.Builder
	if t.dialect == dialectPostgres {
		fmt.Fprintf(&b, "jsonb_to_recordset($%d::jsonb) AS j(", n)
		for i, c := range cols {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(c + " text")
		}
		b.WriteString(")")
		return b.String()
	}
	b.WriteString("(SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "json_extract(value, '$.%s') AS %s", c, c)
	}
	fmt.Fprintf(&b, " FROM json_each($%d)) AS j", n)
	return b.String()
}

// jsonRows encodes rows for rowSet: a JSON array of objects whose fields
// are strings.
func jsonRows(rows any) (string, error) {
	b, err := json.Marshal(rows)
	return string(b), err
}

// flag is how a boolean travels in a rowSet column (text, compared with
// '1').
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
