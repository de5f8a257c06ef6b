FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . && useradd --system revtrace
USER revtrace
EXPOSE 8080
ENV REVTRACE_LISTEN=0.0.0.0:8080
CMD ["revtrace", "serve"]
