"""The web page and its API (`facegen serve`; docs/serve.md).

    server.py   load a run (or the default model) and run uvicorn
    app.py      create_app(generator, ...): the routes, cache headers, JSON errors
    batcher.py  micro-batching in one worker thread, bounded queue
    morph.py    frames between two seeds (slerp of their starting noise)
    encode.py   PNG and GIF bytes
    static/     index.html, app.js, style.css
"""
