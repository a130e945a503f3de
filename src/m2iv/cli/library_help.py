"""The examples `m2iv library --help` and each `m2iv library COMMAND --help` end with."""

EXAMPLES = """examples:
  m2iv library add out/vqa --tag vqa --tag colour --prototype-from easy-vqa   # store a trained vector directory
  m2iv library list --task easy-vqa
  m2iv library search tiny:idefics2 --image cat.png --question "What colour is it?" --top 3
  m2iv library compose --name mix "0.5*vqa + 1.0*captions - noise" --layers 0-5
  m2iv library export mix mix.tar && m2iv library import mix.tar
  m2iv library push mix me/mix-vectors && m2iv library pull me/mix-vectors --name mix2   # via the Hub
  m2iv eval sandbox --task easy-vqa --method m2iv --vectors library:vqa --out runs/lib
  m2iv library check --repair                                       # rebuild a damaged index from the sidecars
  m2iv library serve --root benchmarks/library/vlibrary             # the library in the browser (127.0.0.1:7860)
"""

SUB_EXAMPLES = {
    "add": "example:\n  m2iv library add out/vqa tiny:idefics2 --name vqa-idefics2 --tag vqa --tag colour "
           "--description 'colour VQA' --prototype-from easy-vqa",
    "list": "example:\n  m2iv library list --model tiny:idefics2 --tag vqa",
    "show": "example:\n  m2iv library show vqa-idefics2 --json",
    "search": "examples:\n  m2iv library search tiny:idefics2 --text colour --top 5\n"
              "  m2iv library search tiny:idefics2 --image cat.png --question 'What colour is it?'",
    "export": "examples:\n  m2iv library export vqa-idefics2 out/vqa-copy\n  m2iv library export vqa-idefics2 vqa.tar",
    "import": "example:\n  m2iv library import vqa.tar --name vqa-copy",
    "push": "example:\n  m2iv library push vqa-idefics2 me/vqa-idefics2-vectors --private",
    "pull": "examples:\n  m2iv library pull me/vqa-idefics2-vectors\n  m2iv library pull hf://me/vqa@v1 --name vqa-v1",
    "remove": "example:\n  m2iv library remove vqa-idefics2",
    "compose": "examples:\n  m2iv library compose --name mix 0.5*vqa + 1.0*captions - noise --tag mix\n"
               "  m2iv library compose --name early \"vqa\" --layers 0-5,7 --sites attn,mlp",
    "condition": "example:\n  m2iv library condition safety sandbox --task sandbox-safety --name safety-gated",
    "resolve": "example:\n  m2iv library resolve library:vqa-idefics2      # prints a verified vector directory",
    "check": "examples:\n  m2iv library check             # report problems (exit 1 when there are any)\n"
             "  m2iv library check --repair    # rebuild the index from the sidecars; nothing is deleted",
    "serve": "examples:\n  m2iv library serve --root benchmarks/library/vlibrary     # browse, try, search, results\n"
             "  m2iv library serve tiny:idefics3 --root lib --port 8000 --allow-writes   # save compositions too",
}
