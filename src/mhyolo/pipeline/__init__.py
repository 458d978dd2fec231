"""`mhyolo pipeline`: the stages in a row, each resumable and skipped once done."""
