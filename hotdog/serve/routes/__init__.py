"""The service's routes, one ``APIRouter`` per concern; :func:`hotdog.serve.app.create_app`
includes them."""
