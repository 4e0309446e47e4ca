package ctlserver

// CheckedJoin is checkedJoin, for the external tests.
var CheckedJoin = checkedJoin
