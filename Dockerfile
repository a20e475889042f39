# gptlite's API in a container: the README's install and serve commands (CPU torch), unchanged (a test checks it).
#   docker build -t gptlite .
#   export GPTLITE_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(24))")
#   docker run -p 8000:8000 -e GPTLITE_API_KEY -v "$PWD/saved_models:/app/saved_models" gptlite
# The server listens on all interfaces here, so it refuses to start without a key (16 characters or more).
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
RUN pip install -e .
EXPOSE 8000
CMD ["python", "-m", "gptlite.api", "--host", "0.0.0.0", "--port", "8000"]
