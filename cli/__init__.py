"""Command-line edges of the suite: parse options, load and validate files,
call one library function, write results. No physics here."""
