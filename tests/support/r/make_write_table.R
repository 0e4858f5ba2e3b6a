# Writes the R-made TSV files that tests/test_r_written_tsv.py reads (run once with R; CI has no R):
#   Rscript tests/support/r/make_write_table.R ../shared/data/alpacaeval_human_vs_gpt4.csv tests/support/r
# 40 real rows of the shared AlpacaEval file (their quotes, backslashes, line breaks and tabs kept),
# plus edits a user's R data frame can have: a backslash before a quote, a missing score, and (in
# write_table_missing_text.tsv only) a missing response. R's read.csv turns the CRLF inside the shared
# texts into LF, so the files hold LF.
args <- commandArgs(trailingOnly = TRUE)
src <- read.csv(args[1], stringsAsFactors = FALSE, colClasses = "character", encoding = "UTF-8")
df <- src[1:40, c("id", "prompt", "text_a", "text_b", "preferred_text")]
df$prompt[3] <- paste(df$prompt[3], 'with a path C:\\dir\\ and a \\"quoted\\" word', sep = " ")
df$score <- seq(0.5, 20, by = 0.5)
df$score[7] <- NA
out <- args[2]
write.table(df, file.path(out, "write_table_default.tsv"), sep = "\t", fileEncoding = "UTF-8")
write.table(df, file.path(out, "write_table_no_row_names.tsv"), sep = "\t", row.names = FALSE, fileEncoding = "UTF-8")
write.table(df, file.path(out, "write_table_qmethod_double.tsv"), sep = "\t", qmethod = "double", fileEncoding = "UTF-8")
df$text_b[5] <- NA  # a missing response
write.table(df, file.path(out, "write_table_missing_text.tsv"), sep = "\t", fileEncoding = "UTF-8")
# (R's own read.table does not undo qmethod = "escape": it keeps the backslashes, so the expected
# texts in the test come from the shared CSV itself, not from R.)
stopifnot(any(grepl('\\\\"', readLines(file.path(out, "write_table_default.tsv"), encoding = "UTF-8"))))
