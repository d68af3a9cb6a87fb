from detector_al.cli.app import app

app(prog_name="detector-al")
