curl https://www.gencraft.cc/api/v1/tasks/task_abc123 \
-H "Authorization: Bearer <your_api_key>"
